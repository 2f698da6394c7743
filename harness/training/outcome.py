"""How a training run ends: its result, an error the user fixes (the message says what to change),
or a stop that was asked for and resumes from the checkpoint written before it.
"""

from __future__ import annotations

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
    (`harness study` has no --force or --no-resume) gives its own fix to the same problem. `keep`: a way
    to use the checkpoint as it is, offered before retraining (the commit that wrote a config which
    this version does not read)."""

    def __init__(self, problem: str, retrain: str = DAMAGED_FIX, keep: str | None = None):
        super().__init__(problem, retrain, keep)  # every argument in args: the error pickles whole, to other ranks
        self.problem, self.retrain, self.keep = problem, retrain, keep

    def __str__(self) -> str:
        return f"{self.problem}; {self.keep}, or {self.retrain}" if self.keep else f"{self.problem}; {self.retrain}"


class TrainingStopped(RuntimeError):
    """Training was asked to stop (`should_stop`) and saved a checkpoint first: it resumes there."""


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
    reused: bool = False  # the run folder held this finished checkpoint already: nothing was trained
