"""Data-parallel training through torch's own engine: torchrun, DDP and FSDP2 (`fully_shard`).

The training loop sees one `Dist` and calls the same functions at every world size; this module
decides what they do. Launched by torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) it
joins the process group (nccl on GPU, gloo on CPU); started plainly it is rank 0 of 1 and needs no
group, except for FSDP2, which runs on a one-process group so that `--parallel fsdp` takes the
same path at N = 1 (with a note that it saves no memory there). Parallelism stays out of model
code (as in torchtitan): wrapping looks only for a `blocks` ModuleList (the shared backbone's
layers) to shard layer by layer, and shards the whole module as one unit when there is none.

Only rank 0 writes files or prints; the others take part in the collectives (state-dict gathers,
loss reductions) and nothing else.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from harness.config import ConfigError

PARALLEL_MODES = ("ddp", "fsdp")
# how long ranks of a data-parallel evaluation wait for each other: rank 0 runs the tasks that are not
# data-parallel (length, retrieval) alone, which can take many minutes at long contexts
EVAL_TIMEOUT_S = 4 * 3600
# said where --parallel fsdp runs in one process: FSDP2's path over one rank, each parameter whole
ONE_SHARD_NOTE = ("note: --parallel fsdp in one process shards each parameter over that one rank, so nothing is "
                  "split and no memory is saved; to shard over N GPUs, launch "
                  "`torchrun --nproc-per-node N -m harness train ...`")
# how long the other ranks wait, at a barrier or for an object, while rank 0 works on the host alone:
# tokenizing a large corpus on first use or writing a 760m checkpoint takes far longer than a
# collective's default timeout (NCCL's 10 minutes), which would stop them with a traceback mid-wait
HOST_WAIT_TIMEOUT_S = 24 * 3600
_host_group = None  # the gloo group of those waits in a torchrun job (`setup`); None otherwise


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size and the device it trains on."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether a process group exists (collectives must be called on every rank)."""
        return dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        """Wait for every rank, however long rank 0's work on the host takes (`HOST_WAIT_TIMEOUT_S`)."""
        if self.active:
            dist.barrier(group=_host_group)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of a tensor over ranks (a copy; the input is left as it is)."""
        value = value.detach().clone()
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def gather_objects(self, obj) -> list | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=_host_group)
        return out

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank (waiting for it as a barrier does)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=_host_group)
        return box[0]


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process: the one that prints."""
    return not launched_by_torchrun() or os.environ["RANK"] == "0"


def setup(device: str | None = None, parallel: str = "ddp", timeout_s: float | None = None) -> Dist:
    """This process's Dist, joining the torchrun job's process group on first use.

    device: None picks cuda when available; under torchrun `cuda` means this rank's GPU
    (cuda:LOCAL_RANK). timeout_s: how long a collective may wait for a rank (torch's default when
    None; evaluation raises it, because ranks wait while rank 0 alone runs a task that is not
    data-parallel). Barriers and object exchanges, where the ranks wait for rank 0's work on the
    host, take a gloo group of their own that waits `HOST_WAIT_TIMEOUT_S`. The groups are destroyed
    at interpreter exit. `--parallel fsdp` at world size 1 trains (a legitimate run, resumable at any
    world size) but a note says that it shards nothing, since whoever asked for sharding expects
    memory saved.
    """
    global _host_group
    if parallel not in PARALLEL_MODES:
        raise ConfigError(f"unknown parallel mode {parallel!r}; choose one of {', '.join(PARALLEL_MODES)}")
    torchrun = launched_by_torchrun()
    rank = int(os.environ["RANK"]) if torchrun else 0
    world = int(os.environ["WORLD_SIZE"]) if torchrun else 1
    local_rank = int(os.environ["LOCAL_RANK"]) if torchrun else 0
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for but no CUDA GPU is visible; pass --device cpu")
        if torchrun:
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"rank {rank} needs GPU {local_rank} but only {torch.cuda.device_count()} "
                                  f"are visible; lower --nproc-per-node")
            dev = torch.device("cuda", local_rank)
        elif dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    elif torchrun and world > 1 and dev.type != "cpu":
        raise ConfigError(f"multi-process training runs on cuda or cpu, not {dev.type}")
    if not dist.is_initialized() and (torchrun or parallel == "fsdp"):
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else None
        if torchrun:
            dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None, timeout=timeout)
            _host_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=HOST_WAIT_TIMEOUT_S))
        else:  # FSDP2 needs a group even alone: an in-process store, no ports
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        atexit.register(teardown)
    if parallel == "fsdp" and world == 1:
        print(ONE_SHARD_NOTE, file=sys.stderr, flush=True)
    return Dist(rank, world, local_rank, dev)


def teardown() -> None:
    global _host_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _host_group = None


def layers_of(model: nn.Module) -> list[nn.Module]:
    """The repeated layers to wrap one by one (checkpointing, compile, sharding): `model.blocks`."""
    blocks = getattr(model, "blocks", None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


def wrap(model: nn.Module, parallel: str, d: Dist) -> nn.Module:
    """The module that the loop calls: DDP (replicated weights, all-reduced gradients) or FSDP2
    (each layer's parameters sharded over ranks, gathered for its forward and backward). Without a
    process group DDP has nothing to do and the model is returned as it is."""
    if parallel == "fsdp":
        try:
            from torch.distributed.fsdp import fully_shard
        except ImportError:
            raise ConfigError("--parallel fsdp needs torch>=2.6 (torch.distributed.fsdp.fully_shard); "
                              "pip install -U torch, or use --parallel ddp") from None
        for layer in layers_of(model):
            fully_shard(layer)
        fully_shard(model)
        return model
    if d.active:
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place and needs no unwrapping)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: nn.Module, sync: bool):
    """Context for one micro-batch's backward: gradients are reduced over ranks only when `sync`
    (the last micro-batch of a step), so accumulation costs one reduction per step."""
    if sync:
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        @contextlib.contextmanager
        def no_sync():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        return no_sync()
    return contextlib.nullcontext()


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm to max_norm; returns the norm before clipping (all ranks agree),
    a tensor on the device (reading it waits for the GPU). Under FSDP2 the norm is a replicated
    DTensor over the sharded gradients."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


# ---------------------------------------------------------------- full state dicts
# Checkpoints hold full (unsharded) tensors, written by rank 0: one safetensors file any world
# size or a single process can read, at the cost of gathering the model and optimizer state into
# rank 0's CPU memory at each save (about 12 bytes per parameter: 9 GB at 760m).

def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state on rank 0, on CPU ({} on other ranks); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    return get_model_state_dict(model, options=_full_options(cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state keyed by parameter name, on rank 0 on CPU; every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optim_state: dict) -> None:
    """Load full state dicts (read on rank 0; other ranks pass {}) into a wrapped or plain model."""
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    options = _full_options(broadcast_from_rank0=dist.is_available() and dist.is_initialized())
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
