"""Held-out loss of trained checkpoints scored across document boundaries (as every row of the study
is) and within them (as the attention and fla models train: `heldout_score(..., by_document=True)`),
to measure the caveat in README.md ("Things to know"): on a machine that holds the study's
checkpoints, `python results/scaling/document_scoring.py RUNS/scaling > document_scoring.md`
(one row per finished checkpoint of a model that trains within documents, found under
RUNS/scaling/<size>/<model>/<run>/; a training cut short holds other weights than any row, so it is
left out). The checkpoints go one of each model first, then the next of each, so that a short time
budget (`timeout`) measures every model once before it measures any twice.
"""

import sys
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import torch

from harness.data.streams import prepare_streams
from harness.data.tokenizer import get_tokenizer
from harness.training.checkpoint import CHECKPOINT_DIR, load_checkpoint, read_meta
from harness.training.heldout import heldout_score
from harness.training.recipe import autocast_for


def one_of_each_model_first(checkpoints: list[Path]) -> list[Path]:
    """<size>/<model>/<run>/checkpoint paths, each model's k-th (in path order) before any model's (k+1)-th."""
    seen: dict[str, int] = defaultdict(int)
    ranked = []
    for ckpt in sorted(checkpoints):
        model = ckpt.parent.parent.name
        ranked.append((seen[model], ckpt))
        seen[model] += 1
    return [ckpt for _, ckpt in sorted(ranked)]


runs = Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu/runs/scaling")
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("| run | held-out loss, across documents (the study's rows) | within documents (as trained) | "
      "difference |\n|---|---|---|---|")
# a training cut short holds other weights than the study's rows
finished = [c for c in runs.glob(f"*/*/*/{CHECKPOINT_DIR}") if read_meta(c).get("heldout_loss") is not None]
for ckpt in one_of_each_model_first(finished):
    model, cfg, name, _ = load_checkpoint(ckpt, device)
    if not getattr(model, "supports_varlen", False):
        continue  # Mamba's models train and score across boundaries alike
    t = cfg.train
    _, held = prepare_streams(t.corpus, get_tokenizer(t.tokenizer))
    autocast = autocast_for(device, t.dtype) if device.type == "cuda" else nullcontext
    across, within = (heldout_score(model, held, t.seq_len, t.eval_tokens, t.micro_batch, device, autocast,
                                    by_document=apart).loss for apart in (False, True))
    print(f"| {ckpt.parent.relative_to(runs)} | {across:.4f} | {within:.4f} | {within - across:+.4f} |", flush=True)
