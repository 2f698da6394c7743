"""Running out of memory: recognising it whichever layer raised it, and telling a job too large for
its device from one squeezed by other processes on the same GPU (a study's side-by-side runs).

The two call for different answers. A job too large is the user's to fix (a smaller micro-batch,
activation checkpointing, a smaller model), and a sweep over lengths may honestly stop at the
last length that fits. A job squeezed by its neighbours fits once they finish: it is a temporary
failure (the CLI exits SQUEEZED_EXIT, sysexits' EX_TEMPFAIL, instead of 2), the study's pool runs
it again later, and a measurement it cut short must not be recorded as the model's answer.
"""

from __future__ import annotations

import os

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


# Bytes a CPU training step holds per token and layer, in units of model.hidden_size fp32 values
# (the activations autograd keeps for the backward), and per token in units of model.vocab_size fp32
# values (logits, their log-softmax and gradient). Measured (peak RSS of `harness train` on 2 CPU
# cores, less the ~0.45 GB of the tiny preset's run, which holds torch and the data) for swat and
# transformer at hidden 256 and 512, 4 layers, 4,096 and 8,192 tokens per micro-batch, vocab 257 and
# 32,000: 30-31 hidden values per token and layer, 2.7 vocab values per token; taken a little lower, so
# that the estimate stays below what a model with fewer saved activations really needs.
LAYER_VALUES = 26
LOGIT_VALUES = 2.5


def training_step_bytes(params: int, cfg) -> int:
    """Estimated peak bytes of one CPU training step of a model of `params` parameters at cfg (a
    Config), in fp32 as the CPU trains: weights, gradients and AdamW's two moments (16 bytes a
    parameter), plus the activations of one micro-batch (train.micro_batch x train.seq_len tokens)
    through model.num_layers layers of model.hidden_size and the logits over model.vocab_size. With
    train.activation_checkpointing a layer keeps only its input, and one layer's activations are live
    at a time. It counts what every model on the shared backbone holds; a model's own extras (the
    attention scores of a sliding window, a recurrence's states) come on top, so a run it refuses
    cannot fit, and one it lets through may still not."""
    m, t = cfg.model, cfg.train
    tokens = t.micro_batch * t.seq_len
    layers = m.num_layers + LAYER_VALUES if t.activation_checkpointing else m.num_layers * LAYER_VALUES
    return 16 * params + 4 * tokens * (layers * m.hidden_size + LOGIT_VALUES * m.vocab_size)


def available_host_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping); None where there is none."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def model_step_bytes(model: torch.nn.Module, cfg) -> int | None:
    """training_step_bytes of `model` (as checked_model gives it: only its parameters are counted, a
    shared weight once); None for a model fitted by counting, which trains no step."""
    if getattr(model, "fitted_by_counting", False):
        return None
    return training_step_bytes(sum(p.numel() for p in model.parameters()), cfg)


def check_side_by_side(steps: dict[str, int], runs: int) -> None:
    """Refuse `runs` CPU trainings side by side (a study's --jobs) where that many of the largest of
    `steps` ({which run: training_step_bytes}) cannot fit the host's available memory together. Each
    worker's own check_training_memory sees only its step against what is available when it starts,
    so N runs that each fit alone pass it and then outgrow the host together, and the OOM killer ends
    them (exit 137, no message). The pool may run N rates or seeds of the largest model and size at
    once, so N copies of the largest step is what it must have room for; checked by the pool before
    any worker starts, it is one line naming --jobs instead of N silent deaths."""
    available = available_host_bytes()
    if not steps or available is None:
        return
    which, each = max(steps.items(), key=lambda item: item[1])
    if runs * each <= available:
        return
    fits = int(available // each)
    fix = f"use --jobs {fits}" if fits else f"even one does not fit: {FIXES}"
    raise OutOfMemory(f"--jobs would train {runs} runs side by side on the CPU, the largest ({which}) needing "
                      f"about {each / 2**30:,.1f} GiB (weights, gradients, AdamW states and activations): "
                      f"{runs * each / 2**30:,.1f} GiB for {runs} of them, and {available / 2**30:,.1f} GiB is "
                      f"available; {fix}")


def check_training_memory(model: torch.nn.Module, cfg, device) -> None:
    """Refuse, before anything is written, a CPU training whose step cannot fit the host's available
    memory: Linux's OOM killer would end the process first (exit 137, no message, an empty run folder).
    model: as checked_model gives it (on the meta device: only its parameter count is read); a model
    fitted by counting trains no step."""
    if torch.device(device).type != "cpu" or (step := model_step_bytes(model, cfg)) is None:
        return
    available = available_host_bytes()
    # torchrun's processes on this host (LOCAL_WORLD_SIZE) each hold a whole step, out of one memory
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    need = processes * step
    if available is not None and need > available:
        each = f" ({processes} processes on this host, a step each)" if processes > 1 else ""
        raise OutOfMemory(f"training at train.micro_batch={cfg.train.micro_batch} (x {cfg.train.seq_len} tokens) "
                          f"would run out of memory on the CPU{each}: it needs about {need / 2**30:,.1f} GiB (weights, "
                          f"gradients, AdamW states and activations), and {available / 2**30:,.1f} GiB is available; "
                          f"lower train.micro_batch (gradient accumulation keeps the step the same; in a study file, "
                          f"under the size's train:), use a smaller preset (--preset tiny), or train on a GPU")
