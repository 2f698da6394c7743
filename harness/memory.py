"""Running out of memory: recognising it whichever layer raised it, and telling a job too large for
its device from one squeezed by other processes on the same GPU (a study's side-by-side runs).

The two call for different answers. A job too large is the user's to fix (a smaller micro-batch,
activation checkpointing, a smaller model), and a sweep over lengths may honestly stop at the
last length that fits. A job squeezed by its neighbours fits once they finish: it is a temporary
failure (the CLI exits SQUEEZED_EXIT, sysexits' EX_TEMPFAIL, instead of 2), the study's pool runs
it again later, and a measurement it cut short must not be recorded as the model's answer.
"""

from __future__ import annotations

import torch

SQUEEZED_EXIT = 75  # EX_TEMPFAIL: out of memory while other processes held the GPU; run it again later
SHARED_GIB = 2.0  # memory held outside this process beyond which a GPU counts as shared (a CUDA context is ~0.5 GiB)
FIXES = "lower train.micro_batch (gradient accumulation keeps the batch), set train.activation_checkpointing=true, " \
        "or make the model smaller"


class OutOfMemory(RuntimeError):
    """A job ran out of memory; the message says what to change, or that other processes held the
    GPU (`squeezed`: then running it again once they finish is the fix)."""

    def __init__(self, message: str, squeezed: bool = False):
        super().__init__(message)
        self.squeezed = squeezed


def is_out_of_memory(err: BaseException) -> bool:
    """torch's OutOfMemoryError, and the plain RuntimeErrors that CUDA ("CUDA error: out of memory"),
    Triton's launcher ("Triton Error [CUDA]: out of memory") and the host allocator raise for the same."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def held_by_others_gib(device) -> float:
    """GiB of this CUDA device's memory that this process's allocator does not hold: other
    processes' (and this process's CUDA context); 0 on any other device."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return 0.0
    free, total = torch.cuda.mem_get_info(device)
    return max(0.0, (total - free - torch.cuda.memory_reserved(device)) / 2**30)


def gpu_is_shared(device) -> bool:
    return held_by_others_gib(device) > SHARED_GIB


def stop_sweep_at(err: BaseException, what: str, device) -> None:
    """For a sweep over growing lengths that raised `err` at one length: return where it may stop
    there (out of memory with the device to itself: the model's own limit); re-raise anything else;
    raise the squeezed OutOfMemory where other processes held the GPU, since their share, not the
    model, would decide the last length (the sweep is then all lengths or none, and runs again)."""
    if not is_out_of_memory(err):
        raise err
    torch.cuda.empty_cache()
    if gpu_is_shared(device):
        raise out_of_memory(what, device) from None


def out_of_memory(what: str, device, fixes: str = FIXES) -> OutOfMemory:
    """The error to raise for `what` running out of memory on `device`: squeezed where other
    processes hold a share of the GPU, else naming `fixes`."""
    others = held_by_others_gib(device)
    if others > SHARED_GIB:
        return OutOfMemory(f"{what} ran out of memory on {device} while other processes held {others:.1f} GiB "
                           f"of it; run it again when they finish (or {fixes})", squeezed=True)
    return OutOfMemory(f"{what} ran out of memory on {device}; {fixes}")
