"""Held-out loss of trained checkpoints scored across document boundaries (as every row of the study
is) and within them (as the attention and fla models train: `heldout_score(..., by_document=True)`),
to measure the caveat in README.md ("Things to know"): on a machine that holds the study's
checkpoints, `python results/scaling/document_scoring.py RUNS/scaling > document_scoring.md`
(one row per finished checkpoint of a model that trains within documents, found under
RUNS/scaling/<size>/<model>/<run>/; a training cut short holds other weights than any row, so it is
left out).
"""

import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from harness.data.streams import prepare_streams
from harness.data.tokenizer import get_tokenizer
from harness.training.checkpoint import CHECKPOINT_DIR, load_checkpoint, read_meta
from harness.training.heldout import heldout_score
from harness.training.recipe import autocast_for

runs = Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu/runs/scaling")
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("| run | held-out loss, across documents (the study's rows) | within documents (as trained) | "
      "difference |\n|---|---|---|---|")
for ckpt in sorted(runs.glob(f"*/*/*/{CHECKPOINT_DIR}")):
    if read_meta(ckpt).get("heldout_loss") is None:
        continue  # training cut short: not the weights of the study's rows
    model, cfg, name, _ = load_checkpoint(ckpt, device)
    if not getattr(model, "supports_varlen", False):
        continue  # Mamba's models train and score across boundaries alike
    t = cfg.train
    _, held = prepare_streams(t.corpus, get_tokenizer(t.tokenizer))
    autocast = autocast_for(device, t.dtype) if device.type == "cuda" else nullcontext
    across, within = (heldout_score(model, held, t.seq_len, t.eval_tokens, t.micro_batch, device, autocast,
                                    by_document=apart).loss for apart in (False, True))
    print(f"| {ckpt.parent.relative_to(runs)} | {across:.4f} | {within:.4f} | {within - across:+.4f} |", flush=True)
