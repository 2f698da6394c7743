"""How a training run ends: its result, an error the user fixes (the message says what to change),
or a stop that was asked for and resumes from the checkpoint written before it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, a corpus too short); the message says what to change."""


class TrainingDiverged(TrainingError):
    """The loss or gradient norm became non-finite: at this learning rate the run is no result (a
    sweep records it as diverged and rules the rate out)."""


DAMAGED_FIX = "retrain it: `harness run ... --force`, or `harness train ... --no-resume`"


class CheckpointDamaged(TrainingError):
    """A checkpoint that cannot be read as it is (a file missing, truncated or garbled, or that does not
    fit its model). The problem and its fix are kept apart, so that a command with other ways to retrain
    (`harness study`: delete the one run's folder; its --force would retrain all of a model's runs) gives
    its own fix to the same problem. `keep`: a way to use the checkpoint as it is, offered before
    retraining (the commit that wrote a config which this version does not read)."""

    def __init__(self, problem: str, retrain: str = DAMAGED_FIX, keep: str | None = None):
        super().__init__(problem, retrain, keep)  # every argument in args: the error pickles whole, to other ranks
        self.problem, self.retrain, self.keep = problem, retrain, keep

    def __str__(self) -> str:
        return f"{self.problem}; {self.keep}, or {self.retrain}" if self.keep else f"{self.problem}; {self.retrain}"


class TrainingStopped(RuntimeError):
    """Training was asked to stop (`should_stop`) and saved a checkpoint first: it resumes there.
    model: the model stopped, where a command trains several (`harness run`): how to go on depends on
    which models come after it."""

    def __init__(self, message: str, model: str | None = None):
        super().__init__(message, model)  # every argument in args: the error pickles whole
        self.message, self.model = message, model

    def __str__(self) -> str:
        return self.message


@dataclass
class TrainResult:
    model: torch.nn.Module
    steps: int
    tokens: int
    train_loss: float
    heldout_loss: float
    params: int
    seconds: float
    checkpoint: Path
    tokens_per_s: float | None = None  # steady state: steps after the first (compile, warm-up) of this run
    mfu: float | None = None  # model FLOPs utilisation against the measured bf16 matmul peak (CUDA)
    peak_mem_gib: float | None = None  # max CUDA memory allocated (GiB) on rank 0
    mfu_datasheet: float | None = None  # the same against the GPU's datasheet bf16 peak, where known
    reused: bool = False  # the run folder held this finished checkpoint already: nothing was trained


class StopRequests:
    """SIGTERM and a first Ctrl-C, once training asks for them (`should_stop`, `train`'s, at each step it
    logs), collected instead of stopping the process: training then finishes that step, checkpoints and
    stops, so that a cluster's preemption (SIGTERM, SIGKILL a while later) or a Ctrl-C loses no steps.
    `received`: the signals collected, in order."""

    def __init__(self):
        self.received: list[int] = []
        self.asking = False

    def should_stop(self) -> bool:
        self.asking = True
        return bool(self.received)

    @contextlib.contextmanager
    def training(self):
        """Hold signals back only while this training asks (yields its should_stop), where work follows
        it that has no checkpoint to stop at (`harness run` scores the model next): after it, as before
        it, a signal stops at once. One held back when training returns (it came after the last
        question: the last step, the held-out score) stops the command then, as a TrainingStopped:
        the run is finished and saved."""
        try:
            yield self.should_stop
        finally:
            self.asking = False
        if self.received:
            raise TrainingStopped("stopped as asked, after its training had finished and was saved")


@contextlib.contextmanager
def stop_requests():
    """A `StopRequests` whose signals are held back inside its `training()`, from the first time that
    training asks until it returns; one that came after training's last question (its last step, the
    held-out score) stops the command when it returns, its final checkpoint written. Before training
    asks (preparing the data, the first step, a model fitted by counting, which never asks) there is
    nothing to lose, and a signal stops at once, by the handler there was before; as do a second Ctrl-C
    and a signal to a process forked from this one (a library's pool). A repeated SIGTERM changes
    nothing: a scheduler may signal both torchrun and its workers, which torchrun signals again. A
    signal ignored (a job started in the background) stays so."""
    owner, stops = os.getpid(), StopRequests()

    def request(signum, frame):
        if os.getpid() != owner or not stops.asking or (signum == signal.SIGINT and stops.received):
            before[signum](signum, frame)
        else:
            stops.received.append(signum)
    before = {sig: handler for sig in (signal.SIGINT, signal.SIGTERM) if callable(handler := signal.getsignal(sig))}
    for sig in before:
        signal.signal(sig, request)
    try:
        yield stops
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
