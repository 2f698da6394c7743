"""Long-context retrieval probes, synthetic and seeded: passkey retrieval and MQAR.

`passkey` (Mohtashami & Jaggi, 2023): a 5-digit key hidden at a relative depth of repetitive filler
text, then asked for; the model must produce it by greedy decoding through its decode state. Prompt
lengths 1K, 2K, ... up to 32K tokens or 32x the training length, whichever is smaller (at the
paper's training length 1024 the full 1K-32K range), depths 0, 25, 50, 75, 100% (0%: the key right
after the instructions; 100%: right before the question). acc = fraction of prompts whose answer
begins with the key as a whole number (its leading digits, spaces skipped, are the key: a longer
number is wrong).

`mqar` (multi-query associative recall, Zoology: Arora et al., 2023): key-value pairs at the start,
then each key queried once at power-law distributed distances (Zoology's power_a = 0.01); acc =
fraction of queries where the next-token argmax after the key is its value (one forward per
sequence, no generation). Tokens are drawn from three disjoint sets of the tokenizer's ids (keys,
values, filler), so every queried key occurred exactly once before; Zoology fills gaps with random
tokens of the whole vocabulary instead, which can repeat a key. Unlike Zoology's, each query is
followed by its value (Zoology leaves that slot random): no query sees its own answer, but the
values already answered narrow the last queries of a sequence down by elimination (a guess among
the values not yet repeated scores about 0.5 at 4 pairs, against 0.25 for a guess among all four).
Query distances follow the power law from the end of the pairs, so most are short whatever the
context (at 4096 tokens, 46-63% by the key-value count lie within 256 tokens of their pair): the
context is the sequence's length, not the recall distance. Contexts: powers of two from 256 to 4x
the training length (at least 256); key-value counts 4..64 where they fit (4 * num_kv <= context).

Both generators depend only on (seed, cell), so every model sees the same prompts, and a model that
copies perfectly from its context scores 1.0 (tests/test_eval.py checks this with an oracle).
`--limit N` caps the samples per cell (rows record it where it is below the probe's count).
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import track

from harness.data.paths import DataError
from harness.data.tokenizer import get_tokenizer
from harness.memory import stop_sweep_at
from harness.registry import register_task

INSTRUCTION = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
               "I will quiz you about the important information there.")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_KEYS = (10000, 100000)  # each key drawn uniformly from these five-digit numbers: chance 1 in 90,000
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
PASSKEY_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
PASSKEY_SAMPLES = 5
MQAR_KV = (4, 8, 16, 32, 64)
MQAR_SAMPLES = 64
MQAR_POWER_A = 0.01
SEED = 1234


def cell_rng(*key) -> np.random.Generator:
    """A generator determined by the seed and the cell (task, length, depth or kv count, sample)."""
    return np.random.default_rng([SEED, *[int(round(k * 1000)) if isinstance(k, float) else k for k in key]])


def doubling(lo: int, hi: int) -> list[int]:
    out = []
    while lo <= hi:
        out.append(lo)
        lo *= 2
    return out


# ---------------------------------------------------------------- passkey

@dataclass
class PasskeyPrompt:
    ids: list[int]
    key: str
    depth: float


def passkey_prompt(tokenizer, length: int, depth: float, sample: int) -> PasskeyPrompt:
    """The prompt with the most fillers that fits `length` tokens (so it falls short of `length` by
    less than one filler, and rows may report `length` as its length), the key after
    round(depth * n) of its n fillers. The text is tokenized whole (pieces tokenized apart would get
    odd joins from BPE tokenizers that prepend a space marker), and the count of fillers is searched
    on whole prompts: a filler tokenized alone can take more tokens than in a run of fillers (one
    more with the Llama-2 tokenizer, which would leave a 32K prompt 4% short)."""
    key = str(cell_rng(0, length, depth, sample).integers(*PASSKEY_KEYS))
    needle = NEEDLE.format(key=key)

    def prompt(n: int) -> list[int]:
        at = round(depth * n)
        return tokenizer.encode(INSTRUCTION + FILLER * at + needle + FILLER * (n - at) + QUESTION)

    fixed = len(tokenizer.encode(INSTRUCTION + needle + QUESTION))
    n = max(1, int((length - fixed) / filler_tokens(tokenizer)))
    while len(prompt(n + 1)) <= length:
        n += 1
    while n >= 1:
        ids = prompt(n)
        if len(ids) <= length:
            return PasskeyPrompt(ids, key, depth)
        n -= 1
    raise ValueError(f"passkey length {length} is too short for the prompt's fixed parts")


def filler_tokens(tokenizer, run: int = 16) -> float:
    """Tokens per filler within a run of fillers, where BPE joins them as in a prompt."""
    return len(tokenizer.encode(FILLER * run)) / run


def answer_of(text: str) -> str:
    """The leading digits of a generated answer (spaces skipped)."""
    text = text.lstrip()
    digits = len(text) - len(text.lstrip("0123456789"))
    return text[:digits]


def greedy(model, ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """New tokens [B, max_new_tokens] by greedy decoding: the model's `generate` (through its decode
    state), or, for a model without one (any module mapping input_ids to logits), its forward re-run
    over the prompt and the tokens so far for each new token (the same tokens, more compute)."""
    if hasattr(model, "generate"):
        return model.generate(ids, max_new_tokens=max_new_tokens)
    out = ids
    for _ in range(max_new_tokens):
        out = torch.cat([out, model(out)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out[:, ids.shape[1]:]


@torch.no_grad()
def passkey_correct(model, tokenizer, prompt: PasskeyPrompt, device, autocast) -> bool:
    """Greedy decoding reproduces the key."""
    ids = torch.tensor([prompt.ids], dtype=torch.long, device=device)
    budget = len(tokenizer.encode(" " + prompt.key)) + 1
    with autocast():
        out = greedy(model, ids, budget)
    return answer_of(tokenizer.decode(out[0].tolist())) == prompt.key


def _autocast(ctx):
    from harness.training.recipe import autocast_for
    return autocast_for(torch.device(ctx.device), ctx.cfg.train.dtype)


def binomial_stderr(p: float, n: int) -> float | None:
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else None


def sweep(ctx, task: str, lengths: list[int]):
    """A probe's lengths under a transient progress bar."""
    return track(lengths, description=f"{task} {ctx.model_name}", transient=True)


def passkey_chance(tokenizer_name: str | None) -> float:
    """A uniform guess among the keys, whatever the tokenizer."""
    return 1 / (PASSKEY_KEYS[1] - PASSKEY_KEYS[0])


@register_task("passkey", group=("retrieval", "all"), chance=passkey_chance,
               description="passkey retrieval, 1K..32K tokens (<= 32x training length), depths 0..100%")
def run_passkey(model, tokenizer, ctx):
    autocast, samples, rows = _autocast(ctx), ctx.take(PASSKEY_SAMPLES), []
    for length in sweep(ctx, "passkey", doubling(1024, min(32768, 32 * ctx.cfg.model.max_seq_len))):
        try:
            cells = []
            for depth in PASSKEY_DEPTHS:
                hits = [passkey_correct(model, tokenizer, passkey_prompt(tokenizer, length, depth, s), ctx.device,
                                        autocast) for s in range(samples)]
                cells.append((depth, float(np.mean(hits))))
        except Exception as err:
            stop_sweep_at(err, f"passkey: {ctx.model_name} at {length} tokens", ctx.device)
            print(f"passkey: {ctx.model_name} ran out of memory at {length} tokens on {ctx.device}; "
                  f"longer prompts are skipped", file=sys.stderr)
            break
        rows += [ctx.row("passkey", "acc", acc, stderr=binomial_stderr(acc, samples), n=samples,
                         context=length, depth=depth, probe_seed=SEED, limit=ctx.limit_if_cut(PASSKEY_SAMPLES))
                 for depth, acc in cells]
    return rows


# ---------------------------------------------------------------- MQAR

def token_pools(tokenizer, size: int = 8192) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three disjoint id sets (keys, values, filler) from the tokenizer's ordinary ids: ids 0-2
    (often special tokens) and eos are left out."""
    ids = np.array([i for i in range(3, tokenizer.vocab_size) if i != tokenizer.eos_id][:size])
    third = len(ids) // 3
    return ids[:third], ids[third:2 * third], ids[2 * third:3 * third]


def mqar_example(tokenizer, context: int, num_kv: int, sample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [context], query positions [num_kv], values [num_kv]): the sequence, where each key is
    queried, and the value that must follow it."""
    keys_pool, values_pool, filler_pool = token_pools(tokenizer)
    if 4 * num_kv > context or num_kv > len(keys_pool):
        raise ValueError(f"mqar: {num_kv} key-value pairs do not fit a context of {context}")
    rng = cell_rng(1, context, num_kv, sample)
    keys = rng.choice(keys_pool, size=num_kv, replace=False)
    values = rng.choice(values_pool, size=num_kv, replace=False)
    seq = rng.choice(filler_pool, size=context)
    seq[0:2 * num_kv:2], seq[1:2 * num_kv:2] = keys, values
    space = (context - 2 * num_kv) // 2  # query slots at even offsets after the pairs
    weights = MQAR_POWER_A * np.arange(1, space + 1) ** (MQAR_POWER_A - 1)
    gaps = rng.choice(space, size=num_kv, replace=False, p=weights / weights.sum())
    positions = 2 * num_kv + 2 * gaps
    seq[positions], seq[positions + 1] = keys, values
    return seq, positions, values


@torch.no_grad()
def mqar_hits(model, tokenizer, context: int, num_kv: int, samples: int, device, autocast,
              max_batch_tokens: int = 32768) -> np.ndarray:
    """Per-query hits [samples * num_kv] of the argmax prediction after each queried key."""
    hits, batch = [], max(1, max_batch_tokens // context)
    for lo in range(0, samples, batch):
        examples = [mqar_example(tokenizer, context, num_kv, s) for s in range(lo, min(samples, lo + batch))]
        ids = torch.tensor(np.stack([e[0] for e in examples]), dtype=torch.long, device=device)
        with autocast():
            predicted = model(ids).argmax(-1).cpu().numpy()
        for row, (_, positions, values) in zip(predicted, examples):
            hits.append(row[positions] == values)
    return np.concatenate(hits)


@functools.cache
def mqar_chance(tokenizer_name: str | None) -> float | None:
    """A uniform guess among the values `token_pools` draws from with this tokenizer; None where it
    is unknown or not here."""
    if tokenizer_name is None:
        return None
    try:
        tokenizer = get_tokenizer(tokenizer_name)
    except DataError:
        return None
    values = token_pools(tokenizer)[1]
    return 1 / len(values) if len(values) else None


@register_task("mqar", group=("retrieval", "all"), chance=mqar_chance,
               description="multi-query associative recall (Zoology) at several key-value counts")
def run_mqar(model, tokenizer, ctx):
    autocast, samples, rows = _autocast(ctx), ctx.take(MQAR_SAMPLES), []
    for context in sweep(ctx, "mqar", doubling(256, max(256, 4 * ctx.cfg.model.max_seq_len))):
        for num_kv in (k for k in MQAR_KV if 4 * k <= context):
            hits = mqar_hits(model, tokenizer, context, num_kv, samples, ctx.device, autocast)
            acc = float(hits.mean())
            rows.append(ctx.row("mqar", "acc", acc, stderr=binomial_stderr(acc, hits.size), n=int(hits.size),
                                context=context, num_kv=num_kv, samples=samples, probe_seed=SEED,
                                limit=ctx.limit_if_cut(MQAR_SAMPLES)))
    return rows
