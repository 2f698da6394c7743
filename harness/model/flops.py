"""Model FLOPs per token, for model FLOPs utilisation (MFU) = model FLOPs/s / peak FLOPs/s.

Counted from the built module, not from a formula per architecture, so that every model is
charged for what it computes:

- every nn.Linear: 2 * in * out per token (projections, MLP, untied head, Mamba's x/dt projections);
- depthwise or grouped nn.Conv1d: 2 * out_channels * in_channels/groups * kernel per token;
- a tied output head (the shared backbone multiplies by the embedding matrix): 2 * D * V;
- the core of each token mixer, by the mixer's own `flops_per_token(seq_len)`: a mapping of kinds
  (`attention`, `scan`, `other`) to forward FLOPs per token at that training length, or a number
  (counted as `other`). The attention mixers count q.k and weights.v over the (query, key) pairs
  they visit, averaged over the training length (`visited_keys`: min(i + 1, W) keys for query i in
  a window, i + 1 without one); masked-out work a kernel may still do is not counted (these are
  model FLOPs, not hardware FLOPs), nor are document boundaries inside packed sequences (they
  depend on the data). Mamba counts its selective scan. The chunked recurrent cores (the fla
  baselines' linear attention and delta rule, Mamba-2's SSD) count the matmuls of the chunked form
  their training kernel runs: within each chunk the scores and their product with the values over
  the whole chunk block, and per token the carried state's update and read-out (their modules say
  what else). A mixer without the method, or whose method returns None, is counted by its
  projections only, and the count names it as partial; so is a model with no module named `mixer`
  (one not on the shared backbone, e.g. llama_hf's Hugging Face Llama), whose attention or
  recurrence this count cannot find.

Training costs 3x the forward (the backward computes gradients for inputs and weights); recomputation
under activation checkpointing is not model work and is not counted. Elementwise work (norms,
activations, sigmoid scores, rotary embeddings) is left out, as in the usual 6N + attention count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

CORE_KINDS = ("attention", "scan", "other")  # what a mixer's flops_per_token may name


@dataclass
class FlopCount:
    """Forward FLOPs per token by kind; `partial` names mixers whose core was not counted."""
    linear: float = 0.0
    head: float = 0.0
    attention: float = 0.0
    scan: float = 0.0
    conv: float = 0.0
    other: float = 0.0
    partial: list[str] = field(default_factory=list)

    @property
    def forward(self) -> float:
        return self.linear + self.head + self.attention + self.scan + self.conv + self.other

    @property
    def train(self) -> float:
        """FLOPs per trained token: forward plus a backward of twice its cost."""
        return 3.0 * self.forward

    def as_dict(self) -> dict:
        return {"linear": self.linear, "head": self.head, "attention": self.attention, "scan": self.scan,
                "conv": self.conv, "other": self.other, "forward": self.forward, "train": self.train,
                "partial": list(self.partial)}


def visited_keys(seq_len: int, window: int | None) -> float:
    """Mean number of keys a query attends to: min(i + 1, W) over i < seq_len (W = None: causal)."""
    w = seq_len if window is None else min(window, seq_len)
    total = w * (w + 1) / 2 + (seq_len - w) * w
    return total / seq_len


def _mixer_core(module: nn.Module, seq_len: int) -> dict[str, float] | None:
    """{kind: forward FLOPs per token} of a mixer's core, by its own `flops_per_token`, or None."""
    count = getattr(module, "flops_per_token", None)
    counted = None if count is None else count(seq_len)
    if counted is None:
        return None
    counted = counted if isinstance(counted, dict) else {"other": counted}
    unknown = set(counted) - set(CORE_KINDS)
    if unknown:
        raise ValueError(f"{type(module).__name__}.flops_per_token names {sorted(unknown)}; count as "
                         f"{', '.join(CORE_KINDS)}")
    return {kind: float(value) for kind, value in counted.items()}


def flops_per_token(model: nn.Module, seq_len: int) -> FlopCount:
    """Forward model FLOPs per token of `model` at training length seq_len (see the module doc)."""
    count = FlopCount()
    mixers = 0
    for name, module in model.named_modules():  # a shared module comes once
        if isinstance(module, nn.Linear):
            count.linear += 2.0 * module.in_features * module.out_features
        elif isinstance(module, nn.Conv1d):
            k = module.kernel_size[0]
            count.conv += 2.0 * module.out_channels * (module.in_channels // module.groups) * k
        if name.split(".")[-1] == "mixer":
            mixers += 1
            core = _mixer_core(module, seq_len)
            if core is None:
                count.partial.append(type(module).__name__)
            for kind, value in (core or {}).items():
                setattr(count, kind, getattr(count, kind) + value)
    if not mixers:
        count.partial.append(type(model).__name__)
    if getattr(model, "head", "absent") is None and isinstance(getattr(model, "embed", None), nn.Embedding):
        count.head = 2.0 * model.embed.weight.numel()  # tied head: logits = h @ embed.T
    count.partial = sorted(set(count.partial))
    return count


# Dense bf16 tensor-core FLOP/s from NVIDIA's datasheets (their "with sparsity" figures halved), by
# a part of the name torch.cuda.get_device_name reports; the first key the name contains counts
# (NVL and PCIe parts before the SXM ones). The fixed denominator that papers quote MFU against,
# beside the measured sustained peak, which runs lower (661-694 TFLOP/s on an H100 SXM).
DATASHEET_BF16_FLOPS = (
    ("H100 NVL", 835.5e12),
    ("H100 PCIe", 756.5e12),
    ("H100", 989.4e12),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.5e12),
    ("H200", 989.4e12),  # SXM and GH200
    ("A100", 312e12),
)


def datasheet_matmul_peak(device_name: str) -> float | None:
    """The datasheet's dense bf16 FLOP/s of a GPU by its name, or None for one not in the table."""
    return next((flops for key, flops in DATASHEET_BF16_FLOPS if key in device_name), None)


def measure_matmul_peak(device: torch.device, size: int = 8192, repeats: int = 20, warmup_s: float = 0.5) -> float:
    """bf16 matmul FLOP/s of this GPU (median over repeats of a size^3 product on random data):
    the ceiling MFU is reported against. CUDA only. The products are timed after warmup_s seconds of
    them, since the first after an idle spell can run below the steady clocks: two runs on one H100
    measured 741 and 786 TFLOP/s with three products of warm-up."""
    if device.type != "cuda":
        raise ValueError("the matmul peak is measured on CUDA devices only")
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    warm = 0.0
    while warm < warmup_s:
        warm += _product_seconds(a, b)
    times = sorted(_product_seconds(a, b) for _ in range(repeats))
    del a, b
    torch.cuda.empty_cache()
    return 2.0 * size ** 3 / times[len(times) // 2]


def _product_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    """Seconds the GPU takes for a @ b (CUDA events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    a @ b
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3

