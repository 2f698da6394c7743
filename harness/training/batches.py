"""What each step trains on: sequences are slices of the packed token stream visited in a seeded
order, so the data position is one integer (sequences consumed). Step s takes sequences
[p, p + S) of that order; with N ranks, rank r takes the r-th of N equal parts, in micro-batches,
so N ranks x accumulation x micro-batch is the single-process global batch, whatever N.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from harness.config import ConfigError
from harness.data.streams import TokenStream, cu_seqlens_for


@functools.lru_cache(maxsize=2)
def sequence_order(num_sequences: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_sequences)


def batch_at(stream: TokenStream, seq_len: int, seed: int, first: int, count: int, device) -> tuple:
    """Sequences first..first+count-1 of the seeded visiting order (epochs reshuffle): inputs,
    targets [count, seq_len] and the batch's cu_seqlens (document boundaries)."""
    n = stream.num_sequences(seq_len)
    windows, starts = [], []
    for k in range(first, first + count):
        epoch, i = divmod(k, n)
        window, doc_starts = stream.sequence(int(sequence_order(n, seed, epoch)[i]), seq_len)
        windows.append(window)
        starts.append(doc_starts)
    tokens = torch.from_numpy(np.stack(windows)).to(device)
    return tokens[:, :-1], tokens[:, 1:], cu_seqlens_for(starts, seq_len).to(device)


def _batch_layout(tcfg, world: int) -> tuple[int, int, int]:
    """(sequences per step, micro-batch, accumulation steps) of one rank."""
    seqs = tcfg.batch_tokens // tcfg.seq_len
    if seqs % world:
        raise ConfigError(f"the global batch of {seqs} sequences (train.batch_tokens / train.seq_len) does not "
                          f"split over {world} ranks; choose a batch_tokens that does")
    per_rank = seqs // world
    micro = min(tcfg.micro_batch, per_rank)
    if per_rank % micro:
        fits = ", ".join(str(m) for m in range(1, per_rank + 1) if per_rank % m == 0)
        raise ConfigError(f"train.micro_batch={micro} must divide the {per_rank} sequences each of {world} "
                          f"rank(s) takes per step; choose one of {fits}")
    return seqs, micro, per_rank // micro
