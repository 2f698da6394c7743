"""`length`: perplexity as a function of evaluation context length, per position bucket.

The claim under test is that SWAT stays stable past its training length; this task makes that a
curve. Data: the WikiText-2 *test* articles of the mirror, concatenated in their order with an
end-of-document token between them (single articles are too short for 16x the training length).
The raw text (`wikitext`) is used when mirrored, else the tokenized v1 copy (`wikitext_2_v1`); the
rows name which.

Evaluation lengths L: the training length, halved while that stays at least 512, then doubled up
to 16x the training length (powers of two from min(512, training length) where the training length
is a power of two); the training length is always one of them.
Every L scores the *same* tokens: the first N * L_max tokens of the stream, cut into N * L_max / L
disjoint windows of L tokens, each scored by one forward from an empty state. Per window, position
p predicts token p + 1 with p + 1 tokens of context; rows give the loss and perplexity over all
positions and per position bucket (the same grid), so a rise after the training length
shows up in the buckets beyond it.

How each family is evaluated past the training length, identically for all: one forward over the
L tokens of the window, nothing model-specific. SWAT and sliding-window
softmax see at most their window per layer by construction; recurrent models carry their state;
full attention (Transformer++) attends to all L tokens with RoPE positions it never trained on.
That is the fair question "what does the model do with L tokens of context". The alternative that
helps full attention, sliding evaluation windows of the training length, is what the `wikitext`
task's rolling windows (and the adapter's `stride`) measure; it is not mixed into this curve.
A forward that runs out of memory at some L ends the sweep for that model at the last length that
fit (said on stderr); rows are only written for lengths that were evaluated completely. Where other
processes hold part of the GPU the task fails instead (harness.memory): their share would decide
where the sweep stops.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from harness.data.corpus import jsonl_lines
from harness.data.paths import DataError
from harness.memory import stop_sweep_at
from harness.registry import register_task
from harness.training.heldout import perplexity

LENGTH_DATASETS = ("wikitext", "wikitext_2_v1")  # the raw text when mirrored, else the tokenized v1
MAX_BATCH_TOKENS = 32768


def eval_lengths(train_len: int, factor: int = 16) -> list[int]:
    """train_len halved while that stays at least 512, then doubled up to factor * train_len: the
    training length is on the grid, so a position bucket ends there."""
    length, out = train_len, []
    while length % 2 == 0 and length // 2 >= 512:
        length //= 2
    while length <= factor * train_len:
        out.append(length)
        length *= 2
    return out


def long_stream(tokenizer) -> tuple[np.ndarray, str]:
    """The test articles of the mirrored WikiText-2, concatenated with eos between, and its name."""
    import json

    from harness.data import mirror
    for i, name in enumerate(LENGTH_DATASETS):
        try:
            path = mirror.require(name)["test"]
            break
        except DataError:
            if i == len(LENGTH_DATASETS) - 1:
                raise
    ids: list[int] = []
    for line in jsonl_lines(path.read_text(encoding="utf-8")):
        if line.strip():
            ids += tokenizer.encode(json.loads(line)["page"]) + [tokenizer.eos_id]
    return np.asarray(ids, dtype=np.int64), name


@torch.no_grad()
def window_losses(model, windows: torch.Tensor, autocast) -> torch.Tensor:
    """Next-token losses [N, L] of windows [N, L + 1] (inputs are the first L tokens)."""
    with autocast():
        logits = model(windows[:, :-1])
    return F.cross_entropy(logits.float().transpose(1, 2), windows[:, 1:], reduction="none")


def bucket_edges(lengths: list[int], length: int) -> list[tuple[int, int]]:
    """Position buckets [lo, hi) of a window of `length` on the grid of evaluation lengths."""
    edges = [0] + [n for n in lengths if n < length] + [length]
    return list(zip(edges[:-1], edges[1:]))


def loss_rows(ctx, losses: torch.Tensor, length: int, lengths: list[int], **extra) -> list:
    """loss and ppl rows over all positions and per bucket; stderr of the mean token loss
    (tokens taken as independent, so a lower bound), ppl's by the delta method."""
    rows = []
    spans = [(None, losses)] + [(f"{lo}-{hi}", losses[:, lo:hi]) for lo, hi in bucket_edges(lengths, length)]
    for bucket, part in spans:
        flat = part.flatten().double()
        mean = float(flat.mean())
        se = float(flat.std() / math.sqrt(flat.numel())) if flat.numel() > 1 else None
        where = {"position_bucket": bucket} if bucket is not None else {}
        rows.append(ctx.row("length", "loss", mean, stderr=se, n=flat.numel(), context=length, **where, **extra))
        ppl = perplexity(mean)
        rows.append(ctx.row("length", "ppl", ppl, stderr=None if se is None or ppl is None else ppl * se,
                            n=flat.numel(), context=length, **where, **extra))
    return rows


@register_task("length", group=("length", "all"), datasets=LENGTH_DATASETS,
               description="perplexity vs evaluation length (to 16x training length), per position bucket")
def run(model, tokenizer, ctx):
    from harness.training.recipe import autocast_for
    stream, dataset = long_stream(tokenizer)  # fails before any model work when absent
    lengths = eval_lengths(ctx.cfg.model.max_seq_len)
    device = torch.device(ctx.device)
    autocast = autocast_for(device, ctx.cfg.train.dtype)
    while (len(stream) - 1) // lengths[-1] == 0 and len(lengths) > 1:  # a stream shorter than the longest length
        lengths.pop()
    longest = lengths[-1]
    available = (len(stream) - 1) // longest  # windows at the longest length: what --limit counts
    if available == 0:
        raise DataError(f"the {dataset} test stream ({len(stream)} tokens) is shorter than one window of "
                        f"{longest} tokens")
    total, limit = ctx.take(available) * longest, ctx.limit_if_cut(available)
    tokens = torch.from_numpy(stream[:total + 1])
    rows = []
    for length in track(lengths, description=f"length {ctx.model_name}", transient=True):
        starts = range(0, total, length)
        per_batch = max(1, MAX_BATCH_TOKENS // length)
        try:
            parts = []
            for lo in range(0, len(starts), per_batch):
                batch = torch.stack([tokens[s:s + length + 1] for s in starts[lo:lo + per_batch]]).to(device)
                parts.append(window_losses(model, batch, autocast).cpu())
        except Exception as err:
            stop_sweep_at(err, f"length: {ctx.model_name} at {length} tokens", ctx.device)
            stops = f"the sweep stops at {length // 2}" if length > lengths[0] else "no length fits"
            print(f"length: {ctx.model_name} ran out of memory at {length} tokens on {ctx.device}; {stops}",
                  file=sys.stderr)
            break
        rows += loss_rows(ctx, torch.cat(parts), length, lengths, dataset=dataset,
                          train_length=ctx.cfg.model.max_seq_len, windows=len(starts), limit=limit)
    return rows
