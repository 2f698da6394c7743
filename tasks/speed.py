"""`speed`: training, prefill and decode throughput/memory sweeps of the run's model (harness.bench.models).

Speed does not depend on the trained weights, so the sweep measures a freshly initialised copy of the
same architecture at the run's config; on a CPU it uses short lengths and says the numbers are not
comparable.
"""

import sys

import torch

from harness.bench.models import (
    CPU_WARNING,
    SWEEPS,
    default_plan,
    points_to_rows,
    sweep_model,
)
from harness.registry import register_task


@register_task("speed", group=("speed", "all"), description="train/prefill/decode tokens/s and memory vs length",
               row_tasks=tuple(f"speed_{sweep}" for sweep in SWEEPS), per_device=True)
def run(model, tokenizer, ctx):
    device = torch.device(ctx.device)
    if device.type == "cpu":
        print(f"warning: {CPU_WARNING}", file=sys.stderr)  # one line, as `harness bench models` says it
    plan = default_plan(device)
    points = sweep_model(ctx.model_name, ctx.cfg, SWEEPS, plan.lengths, device, plan.train_tokens, plan.decode_batches)
    return points_to_rows(points, lambda model, task, metric, value, **extra:  # --limit cuts no sweep: complete
                          ctx.row(task, metric, value, limit=None, **extra))
