"""The held-out loss: the mean next-token loss over the corpus's held-out documents, overall and
per corpus source, computed the same way for every model (at the end of training and by the
`smoke` task), and split over the ranks of a torchrun job. The packed sequences are scored whole,
across the documents' boundaries; training gives the models that take them (`supports_varlen`: the
attention layers and the fla layers, not Mamba's) those boundaries, so `by_document` scores such a
model as it trained, to measure what the difference costs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.streams import TokenStream, cu_seqlens_for
from harness.training import distributed
from harness.training.distributed import Dist
from harness.training.outcome import TrainingError


@dataclass
class HeldoutScore:
    """Mean next-token loss over the scored held-out tokens, their count, and the same per
    corpus source ({source: (loss, tokens)}; a target token belongs to its document's source)."""
    loss: float
    tokens: int
    by_source: dict


def perplexity(loss: float) -> float | None:
    """exp(loss); None where that is beyond a float (a diverged model's loss of thousands of nats,
    where math.exp raises OverflowError): rows.jsonl is strict JSON, and the loss row keeps the number."""
    try:
        return math.exp(loss)
    except OverflowError:
        return None


def scored_sequences(stream: TokenStream, seq_len: int, max_tokens: int) -> int:
    """How many held-out sequences `heldout_score` scores: the first max_tokens (train.eval_tokens)
    of the split, at least one sequence, however many ranks share them. None (a split shorter than
    one sequence) is an error, which training refuses before it starts."""
    n = min(stream.num_sequences(seq_len), max(1, max_tokens // seq_len))
    if n == 0:
        raise TrainingError(f"the held-out split is shorter than one sequence of {seq_len} tokens; use a larger "
                            f"corpus or a smaller train.seq_len")
    return n


@torch.no_grad()
def heldout_score(model, stream: TokenStream, seq_len: int, max_tokens: int, batch: int, device,
                  autocast: Callable, d: Dist | None = None, by_document: bool = False) -> HeldoutScore:
    """Score the first max_tokens of the held-out stream, overall and per source: the same sequences
    whatever the number of ranks. With several, each scores every N-th sequence and the sums are
    reduced; every rank runs as many forwards (a sharded model's collectives pair up across ranks),
    those with one sequence fewer on a repeat that counts for nothing.
    `by_document`: a model that takes document boundaries gets them, as in training (lm_loss)."""
    varlen = by_document and getattr(distributed.unwrap(model), "supports_varlen", False)
    rank, world = (d.rank, d.world_size) if d is not None else (0, 1)
    n = scored_sequences(stream, seq_len, max_tokens)
    was_training = model.training
    model.eval()
    n_sources = max(1, len(stream.source_names))
    sums = torch.zeros(2, n_sources, dtype=torch.float64, device=device)  # loss sum, tokens per source
    mine, share = list(range(rank, n, world)), -(-n // world)
    counts = [1.0] * len(mine) + [0.0] * (share - len(mine))
    mine += [mine[0] if mine else 0] * (share - len(mine))
    for lo in range(0, share, batch):
        idx = mine[lo:lo + batch]
        weight = torch.tensor(counts[lo:lo + batch], dtype=torch.float64, device=device).repeat_interleave(seq_len)
        windows, starts = zip(*(stream.sequence(i, seq_len) for i in idx))
        tokens = torch.from_numpy(np.stack(windows)).to(device)
        with autocast():
            if varlen:
                logits = model(tokens[:, :-1].reshape(1, -1), cu_seqlens=cu_seqlens_for(list(starts), seq_len).to(
                    device)).reshape(len(idx), seq_len, -1)
            else:
                logits = model(tokens[:, :-1])
        losses = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
        if stream.doc_sources is None:
            source = torch.zeros_like(losses, dtype=torch.long)
        else:  # the source of each target token (positions i*seq_len+1 .. (i+1)*seq_len)
            source = torch.from_numpy(np.concatenate([stream.token_sources(i * seq_len + 1, (i + 1) * seq_len + 1)
                                                      for i in idx]).astype(np.int64)).to(device)
        sums[0].index_add_(0, source, losses.double() * weight)
        sums[1].index_add_(0, source, weight)
    if d is not None:
        sums = d.sum(sums)
    model.train(was_training)
    total = sums.sum(1)
    names = stream.source_names or ("",)
    by_source = {names[k]: (float(sums[0, k] / sums[1, k]), int(sums[1, k])) for k in range(n_sources) if sums[1, k]}
    return HeldoutScore(float(total[0] / total[1]), int(total[1]), by_source)
