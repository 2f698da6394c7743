"""`harness bench models`: training, prefill and decode throughput and memory of whole models
across context lengths, the measurement behind "linear cost like the recurrent models".

Sweeps, per model, at one preset (default 340m):
- train:   tokens/s and peak memory of `harness train`'s step (forward, loss, backward, AdamW) at
           sequence lengths 2K..64K with a fixed number of tokens per batch (batch = max(1, tokens //
           length)), with the run's training options as `harness train` applies them: compiled layers
           and the fused loss where they apply (train.compile, train.fused_ce: auto), activation
           checkpointing with `--set train.activation_checkpointing=true`; the rows say which ran.
           One document per sequence by default; `documents`: documents of that many tokens packed
           into each sequence, attended apart as `harness train` attends the corpus's packed
           documents (a softmax model without flash-attn then runs another attention kernel);
- prefill: latency and peak memory of one forward over one sequence of 1K..128K tokens;
- decode:  per-token latency and tokens/s at batch 1 and a large batch after a prompt of 1K..128K
           tokens, and the memory held by the decode state (KV cache, ring buffer or recurrent state).

Every point is timed after warm-up as the median of repeats (harness.bench.timing: triton's do_bench
on GPU), with peak memory from `torch.cuda.max_memory_allocated` reset per point. An out-of-memory
point is recorded with status "oom" (value empty) and the longer lengths of that sweep are recorded as "oom" without
being run; the sweep goes on with the next model. A sweep whose kernel the model's library refuses on
this machine (`KernelRefusedError`, e.g. fla's gated backward on Hopper with some Triton versions)
leaves no rows: the reason is logged and the model's other sweeps still run.

Decode is measured as users' inference stacks run it: caches written in place, one step replayed
from a CUDA graph where the model's step can be captured (else eagerly; rows say which, extra
`cuda_graph` 1/0). The batch's state is one prefilled sequence's, replicated (decode time does not
depend on the values), so long contexts at a large batch are limited by the state's memory, not
by prefill activations; `state_gb` is the memory the state holds (allocated capacity: a full KV
cache grows by 1/8 when full). See `decode_point`.
Numbers measured on a CPU are for testing the code path only, not comparable to GPU numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from harness.bench.timing import GRAPH_REP_MS, median_ms
from harness.config import Config, ConfigError
from harness.data.streams import cu_seqlens_for
from harness.memory import is_out_of_memory
from harness.training.recipe import lm_loss

SWEEPS = ("train", "prefill", "decode")
DEFAULT_LENGTHS = {
    "train": [2048, 4096, 8192, 16384, 32768, 65536],
    "prefill": [1024, 4096, 16384, 32768, 65536, 131072],
    "decode": [1024, 4096, 16384, 65536, 131072],
}
# tokens per training batch at every length (one sequence where a length is longer): at the 340m
# preset 65,536 ran out of memory on an 80 GB H100 for every model at every length (activations
# ~1.2 MB per token without checkpointing, the fp32 logits and their gradient included)
DEFAULT_TRAIN_TOKENS = 32768
DEFAULT_DECODE_BATCHES = (1, 64)
# a CPU only checks the code path (tests, the tiny preset): short lengths, small batches
CPU_LENGTHS = {"train": [128, 256], "prefill": [128, 512], "decode": [128, 512]}
CPU_TRAIN_TOKENS = 512
CPU_DECODE_BATCHES = (1, 4)
CPU_WARNING = "speed measured on a CPU checks the code path only; these numbers are not comparable to GPU numbers"
# the training options a sweep's step applies: with the model config, what its numbers depend on
# besides the point (a changed learning rate times the same step)
MEASURED_OPTIONS = ("dtype", "compile", "fused_ce", "activation_checkpointing")


@dataclass(frozen=True)
class SweepPlan:
    """What the sweeps measure on a device: lengths per sweep, tokens per training batch, decode batches."""
    lengths: dict
    train_tokens: int
    decode_batches: tuple


def default_plan(device: torch.device) -> SweepPlan:
    """The sweeps' defaults: the paper's lengths on a GPU, short ones on a CPU (the code path only)."""
    if device.type == "cpu":
        return SweepPlan(dict(CPU_LENGTHS), CPU_TRAIN_TOKENS, CPU_DECODE_BATCHES)
    return SweepPlan(dict(DEFAULT_LENGTHS), DEFAULT_TRAIN_TOKENS, DEFAULT_DECODE_BATCHES)


@dataclass
class Point:
    """One measured (or out-of-memory) point of a sweep."""
    model: str
    sweep: str
    length: int
    batch: int
    status: str = "ok"  # ok | oom
    metrics: dict = field(default_factory=dict)  # e.g. tokens_per_s, latency_ms, peak_mem_gb
    notes: dict = field(default_factory=dict)  # how it was measured, copied into every row's extra
    profile: str | None = None  # where a training step's time goes (`--profile`): torch.profiler's table


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def state_bytes(state) -> int:
    """Bytes held by tensors in a (nested) decode state: the whole of each tensor, i.e. a cache's
    allocated capacity, not only its filled part. Cache objects (fla's FLACache, known by
    batch_repeat_interleave) iterate over their layers' states."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)) or hasattr(state, "batch_repeat_interleave"):
        return sum(state_bytes(v) for v in state)
    return 0


def replicate_state(state, batch: int):
    """The decode state of one sequence made the state of `batch` sequences: every tensor whose
    leading (batch) dim is 1 repeated along dim 0, as copies (decode writes caches in place, so rows
    must not alias); positions and counters kept; cache objects (fla's FLACache) through their own
    batch_repeat_interleave."""
    if isinstance(state, torch.Tensor):
        return state.repeat(batch, *[1] * (state.dim() - 1)) if state.dim() and state.shape[0] == 1 else state
    if isinstance(state, dict):
        return {k: replicate_state(v, batch) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(replicate_state(v, batch) for v in state)
    if hasattr(state, "batch_repeat_interleave"):
        state.batch_repeat_interleave(batch)
    return state


PROFILE_ROWS = 15


def profile_table(step: Callable[[], object], device: torch.device) -> str:
    """torch.profiler's table of the top PROFILE_ROWS operators and kernels of two calls of step (run
    after the timing's warm-up), by self time on the GPU (on a CPU: CPU time)."""
    from torch.profiler import ProfilerActivity, profile
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # without it, Kineto prints two lines per profile
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
        if cuda:
            torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                     row_limit=PROFILE_ROWS, max_name_column_width=70)


def train_batch(length: int, tokens: int) -> int:
    """Sequences per training batch: `tokens` tokens at every length, one sequence past it."""
    return max(1, tokens // length)


def counted_note(name: str) -> str:
    """Why a count-based model (`fitted_by_counting`: the n-gram references) is not benchmarked."""
    return (f"{name}: not benchmarked: it is fitted by counting (n-gram counts, no trainable parameters), "
            f"so it has no training step or network to time")


def packed_documents(batch: int, length: int, documents: int | None, device) -> torch.Tensor | None:
    """cu_seqlens of a [batch, length] training batch packed with documents of `documents` tokens
    (each sequence starting a document, its last one cut at the sequence's end), as training's
    batches carry the corpus's document boundaries; None for one document per sequence."""
    if documents is None:
        return None
    return cu_seqlens_for([np.arange(0, length, documents)] * batch, length).to(device)


def train_point(model, vocab: int, length: int, tokens: int, device, autocast, warmup_ms, rep_ms,
                profile: bool = False, documents: int | None = None) -> dict:
    """One optimizer step as `harness train` takes it: its loss (fused with the head where
    train.fused_ce applies) and its AdamW, on a model with the run's training options applied, over
    one document per sequence or packed ones of `documents` tokens (`packed_documents`).
    profile: also where the step's time goes (`profile_table`, under "profile")."""
    batch = train_batch(length, tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randint(0, vocab, (batch, length + 1), device=device)
    cu_seqlens = packed_documents(batch, length, documents, device)

    def step():
        with autocast():
            loss = lm_loss(model, x[:, :-1], x[:, 1:], cu_seqlens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ms = median_ms(step, device.type == "cuda", warmup_ms, rep_ms)
    out = {"tokens_per_s": batch * length / ms * 1e3, "step_ms": ms, "batch": batch}
    if profile:
        out["profile"] = profile_table(step, device)
    return out


@torch.no_grad()
def prefill_point(model, vocab: int, length: int, device, autocast, warmup_ms, rep_ms) -> dict:
    x = torch.randint(0, vocab, (1, length), device=device)

    def run():
        with autocast():
            model.prefill(x)

    ms = median_ms(run, device.type == "cuda", warmup_ms, rep_ms)
    return {"latency_ms": ms, "tokens_per_s": length / ms * 1e3}


def time_decode_step(step: Callable[[], object], cuda: bool, rep_ms: float) -> tuple[float, bool]:
    """(median ms of one step, whether it was replayed from a CUDA graph): captured on the GPU,
    eager where capture raises (e.g. a host synchronisation in the step; out of memory too, which
    the eager run then confirms or not) and on the CPU."""
    if cuda:
        try:  # triton captures rep / (one step's time) copies of the step into one graph: keep it short
            return median_ms(step, True, 0, min(rep_ms, GRAPH_REP_MS), cuda_graph=True), True
        except RuntimeError:
            pass  # timed below, outside the except clause: the failed graph's memory is released first
    return median_ms(step, cuda, 0, rep_ms), False


def context_rewinder(model, token: torch.Tensor, state, autocast) -> Callable[[], None]:
    """What puts a decode state back at its context after a timed step. A transformers KV cache
    (Hugging Face's Llama: DynamicCache) appends each step's keys and values in place, so without
    this every repeat would time a context one token longer (hundreds of tokens over a do_bench).
    One probe step tells such a cache (it grew in bytes) from a recurrent one (fla's: the same
    size, and it cannot be rolled back) and from the harness's caches, which a step does not change."""
    if not hasattr(state, "crop"):
        return lambda: None
    filled, size = state.get_seq_length(), state_bytes(state)
    with autocast():
        model.step(token, state)
    if state_bytes(state) == size:
        return lambda: None
    grown = state.get_seq_length() - filled
    state.crop(-grown)  # a negative count removes tokens in transformers 4 and 5 alike

    def rewind():
        state.crop(-grown)
    return rewind


@torch.no_grad()
def decode_point(model, vocab: int, context: int, batch: int, device, autocast,
                 rep_ms: float) -> tuple[dict, dict]:
    """Per-token decode latency of `batch` sequences after `context` tokens: (metrics, notes).

    One sequence is prefilled and stepped once (a full KV cache grows there, not in the timed
    step), then its state is replicated to the batch: decode time does not depend on the values,
    and prefilling batch x context tokens would run out of activation memory long before the
    decode state does. The timed work is one step from that state, replayed from a CUDA graph
    (no launch overhead, as inference engines run decode) where capture succeeds, else eagerly
    (`time_decode_step`); every replay writes the same position, the same work as the next
    token's. notes record which (`cuda_graph` 1/0) and how the state was made.
    """
    x = torch.randint(0, vocab, (1, context), device=device)
    with autocast():
        _, state = model.prefill(x)
        _, state = model.step(x[:, -1], state)
    if batch > 1:
        state = replicate_state(state, batch)
    held = state_bytes(state)
    token = torch.randint(0, vocab, (batch,), device=device)
    rewind = context_rewinder(model, token, state, autocast)

    def step():
        with autocast():
            model.step(token, state)
        rewind()

    ms, graphed = time_decode_step(step, device.type == "cuda", rep_ms)
    metrics = {"per_token_ms": ms, "tokens_per_s": batch / ms * 1e3, "state_gb": held / 2**30}
    notes = {"cuda_graph": int(graphed),
             "decode_state": "1 prefilled sequence replicated to the batch; state_gb = allocated capacity"}
    return metrics, notes


def sweep_model(name: str, cfg: Config, sweeps, lengths: dict, device: torch.device,
                train_tokens: int = DEFAULT_TRAIN_TOKENS, decode_batches=DEFAULT_DECODE_BATCHES,
                warmup_ms: float = 100, rep_ms: float = 500,
                on_point: Callable[[Point], None] | None = None, log: Callable = print,
                profile: bool = False, documents: int | None = None) -> list[Point]:
    """Every point of the chosen sweeps for a freshly initialised model (speed does not depend on
    the weights); OOM points are recorded, never raised; a refused sweep is logged and left out, and
    so is a model fitted by counting (no points); profile: each training point also keeps its
    step's profile (`Point.profile`); documents: the training step's packed document length
    (`train_point`), which its rows record with whether the model kept the documents apart.
    Peak memory counts only what this sweep allocates (model, optimizer state, activations,
    caches), not tensors that were resident before."""
    from harness.model.build import build_model
    from harness.registry import KernelRefusedError
    from harness.training.recipe import apply_training_options, autocast_for
    autocast = autocast_for(device, cfg.train.dtype)
    _reset_memory(device)
    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    torch.manual_seed(0)
    model = build_model(name, cfg.model, device)
    if getattr(model, "fitted_by_counting", False):  # `harness run --tasks speed` on an n-gram reference
        log(counted_note(name))
        return []
    # the training options as `harness train` applies them: they change the training step (prefill
    # and decode call the layers' own prefill and step)
    resolved = apply_training_options(model, cfg.train, device)
    applied = {"activation_checkpointing": int(cfg.train.activation_checkpointing),
               **{key: int(on) for key, on in resolved.items()}}
    if documents is not None:  # a model without packed-document support attends across them (lm_loss)
        applied.update(document_tokens=documents, documents_apart=int(getattr(model, "supports_varlen", False)))
    vocab = cfg.model.vocab_size
    points = []
    plans = [(s, L, b) for s in sweeps for L in lengths[s]
             for b in (decode_batches if s == "decode" else (None,))]
    failed_from: dict = {}  # (sweep, batch) -> shortest length that ran out of memory
    refused: set = set()
    if not (hasattr(model, "prefill") and hasattr(model, "step")):  # a plain module: input_ids -> logits
        refused = {"prefill", "decode"} & set(sweeps)
        if refused:
            log(f"{name}: {' and '.join(sorted(refused))} not measured: the model has no prefill()/step() "
                f"(no decode state)")
    for sweep, length, batch in plans:
        key = (sweep, batch)
        if sweep in refused:
            continue
        point = Point(name, sweep, length, batch or 1)
        if sweep == "train":  # on OOM rows too: whether memory ran out with recomputation on
            point.notes = dict(applied)
        if key in failed_from and length >= failed_from[key]:
            point.status = "oom"
        else:
            model.train(sweep == "train")
            _reset_memory(device)
            try:
                if sweep == "train":
                    point.metrics = train_point(model, vocab, length, train_tokens, device, autocast, warmup_ms,
                                                rep_ms, profile, documents)
                    point.batch = point.metrics.pop("batch")
                    point.profile = point.metrics.pop("profile", None)
                elif sweep == "prefill":
                    point.metrics = prefill_point(model, vocab, length, device, autocast, warmup_ms, rep_ms)
                else:
                    point.metrics, point.notes = decode_point(model, vocab, length, batch, device, autocast,
                                                              rep_ms)
                if device.type == "cuda":
                    point.metrics["peak_mem_gb"] = (torch.cuda.max_memory_allocated(device) - resident) / 2**30
            except KernelRefusedError as err:
                log(f"{name}: {sweep} sweep not measured: {err}")
                refused.add(sweep)
                model.zero_grad(set_to_none=True)
                _reset_memory(device)
                continue
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                point.status = "oom"
                failed_from[key] = length
                model.zero_grad(set_to_none=True)
                _reset_memory(device)
        points.append(point)
        if on_point:
            on_point(point)
    del model
    _reset_memory(device)
    return points


def _where(p: Point) -> dict:
    """The keys that place a point: decode rows by context and batch; training rows by sequence length
    (their batch follows from the fixed tokens per batch, so it is recorded, not used to group)."""
    if p.sweep == "decode":
        return {"context": p.length, "batch": p.batch}
    if p.sweep == "train":
        return {"seq_len": p.length, "batch_tokens": p.batch * p.length}
    return {"seq_len": p.length}


MAIN_METRIC = {"train": "tokens_per_s", "prefill": "latency_ms", "decode": "tokens_per_s"}


def points_to_rows(points: list[Point], make_row: Callable) -> list:
    """Rows in the common schema via make_row(model, task, metric, value, **extra): task
    speed_<sweep>, one row per metric; an OOM point gives one row of the sweep's main metric with
    an empty value and status "oom"."""
    rows = []
    for p in points:
        metrics = p.metrics if p.status == "ok" else {MAIN_METRIC[p.sweep]: None}
        for metric, value in metrics.items():
            rows.append(make_row(p.model, f"speed_{p.sweep}", metric, value, status=p.status, **_where(p),
                                 **p.notes))
    return rows


def config_id(cfg: Config, documents: int | None = None) -> str:
    """A short fingerprint of what a sweep's numbers depend on besides the point: the model config,
    the training options its step applies and its packed document length, if any. Rows carry it
    (extra `config_id`), so that a bench under another config (`--set model.window=8`,
    `--documents 1024`) measures again rather than taking stored rows for its own."""
    measured = {"model": dataclasses.asdict(cfg.model), "train": {k: getattr(cfg.train, k) for k in MEASURED_OPTIONS}}
    if documents is not None:  # absent otherwise: the rows of benches before the option keep their id
        measured["documents"] = documents
    return hashlib.sha256(json.dumps(measured, sort_keys=True, default=str).encode()).hexdigest()[:12]


def planned_places(sweep: str, lengths: list[int], train_tokens: int, decode_batches) -> list[dict]:
    """Where each point a sweep plans is placed in its rows (`_where`): what stored rows must hold
    for the sweep to count as measured."""
    if sweep == "decode":
        points = [Point("", sweep, length, batch) for length in lengths for batch in decode_batches]
    else:
        points = [Point("", sweep, length, train_batch(length, train_tokens) if sweep == "train" else 1)
                  for length in lengths]
    return [_where(p) for p in points]


def _at(row, place: dict) -> bool:
    return all(row.extra.get(k) == v for k, v in place.items())


def _placed(row, places: list[dict]) -> bool:
    return any(_at(row, place) for place in places)


def _same_measurement(row, measured_as: str, device: str) -> bool:
    return row.extra.get("config_id") == measured_as and row.device == device


def is_measured(rows: list, name: str, sweep: str, places: list[dict], measured_as: str, device: str) -> bool:
    """Whether the stored rows hold every planned point of a model's sweep, measured under the same
    config (`config_id`) on the same device: other lengths or batches, or another config, are not
    a measurement of this bench."""
    held = [r for r in rows if r.model == name and r.task == f"speed_{sweep}"
            and _same_measurement(r, measured_as, device)]
    return all(any(_at(r, place) for r in held) for place in places)


def profile_path(out, name: str, length: int):
    return out / "profiles" / f"{name}-train-{length}.md"


def is_profiled(out, rows: list, name: str, lengths: list[int]) -> bool:
    """Whether `--profile` has its answer at every training length the stored rows measured (an
    out-of-memory point has none): a folder measured without it is measured again, else the bench
    would say `already measured` and write no profile."""
    ran = {r.extra.get("seq_len") for r in rows if r.model == name and r.task == "speed_train"
           and r.extra.get("status") == "ok"}
    return all(profile_path(out, name, length).is_file() for length in ran & set(lengths))


def runnable_plan(plan: dict, cfg: Config, device: torch.device, log: Callable) -> dict:
    """The plan ({model: sweeps to measure}) less the models fitted by counting (a note each; none
    but them is an error), every model to measure checked first (`checked_model`): one that cannot
    run here stops the bench before anything is written."""
    from harness.model.build import checked_model
    counted = [name for name, todo in plan.items()
               if todo and getattr(checked_model(name, cfg.model, device), "fitted_by_counting", False)]
    if counted and len(counted) == len(plan):
        raise ConfigError(f"{', '.join(counted)}: fitted by counting (n-gram counts, no trainable parameters), "
                          f"with no training step or network to time; bench neural models (`harness list`)")
    for name in counted:
        log(counted_note(name))
    return {name: todo for name, todo in plan.items() if name not in counted}


def run_bench(names: list[str], cfg: Config, sweeps, lengths: dict, device: torch.device, out_dir,
              train_tokens: int, decode_batches, force: bool = False, log: Callable = print,
              on_point: Callable | None = None, profile: bool = False, documents: int | None = None) -> list:
    """Sweep each model (each once, however often named) into out_dir/{rows.jsonl, run.json,
    table.md, plots}; a model's sweep whose planned points are already there, measured under the
    same config on the same device, is skipped unless force. Rows are saved after each model. A
    folder's training rows share one tokens per batch (`check_one_batch_size`), and run.json records
    the lengths its rows hold. profile: also out_dir/profiles/<model>-train-<length>.md, where each
    training step's time goes. documents: the training step packs documents of that many tokens."""
    from pathlib import Path

    from harness.files import atomic_write_text
    from harness.results.plots import speed_curves
    from harness.results.provenance import provenance, versions
    from harness.results.render import render
    from harness.results.store import Row, read_rows, replace_rows
    from harness.results.tables import build

    out = Path(out_dir)
    rows_file = out / "rows.jsonl"
    rows = read_rows(rows_file, warn=log) if rows_file.is_file() else []
    stamp = provenance(str(device))
    measured_as = config_id(cfg, documents)
    places = {s: planned_places(s, lengths[s], train_tokens, decode_batches) for s in sweeps}
    plan = {name: [s for s in sweeps
                   if force or not is_measured(rows, name, s, places[s], measured_as, stamp["device"])
                   or profile and s == "train" and not is_profiled(out, rows, name, lengths["train"])]
            for name in dict.fromkeys(names)}
    plan = runnable_plan(plan, cfg, device, log)  # one that cannot run here stops the bench before any write
    for name in (n for n, todo in plan.items() if not todo):
        log(f"{name}: already measured at these points under this config (pass --force to measure again)")
    if any(plan.values()):  # else nothing is measured, and run.json keeps only the commands that made rows
        replacing = [replaced_rows(name, todo, places, measured_as, stamp["device"], train_tokens)
                     for name, todo in plan.items() if todo]
        kept = [r for r in rows if not any(replaced(r) for replaced in replacing)]
        for note in checked_replacements(out, rows, kept, plan, measured_as, train_tokens, force):
            log(note)
        out.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made stops the bench before its sweeps
        if device.type == "cpu":
            log(f"warning: {CPU_WARNING}")
        vers = versions()
        params = model_params([n for n, todo in plan.items() if todo], cfg)

        def make_row(model, task, metric, value, **extra):
            return Row(run=out.name, model=model, preset=cfg.preset, task=task, metric=metric, value=value,
                       params=params[model], seed=0, extra={**extra, "config_id": measured_as,
                                                            "torch": vers.get("torch"), "triton": vers.get("triton")},
                       **stamp)

        for name, todo in plan.items():
            if not todo:
                continue
            points = sweep_model(name, cfg, todo, lengths, device, train_tokens, decode_batches, on_point=on_point,
                                 log=log, profile=profile, documents=documents)
            for p in points:
                if p.profile is not None:
                    atomic_write_text(profile_path(out, name, p.length), profile_markdown(p, stamp))
            rows = replace_rows(rows_file, points_to_rows(points, make_row),
                                replaced_rows(name, todo, places, measured_as, stamp["device"], train_tokens), warn=log)
            record_stored(out, rows, points, train_tokens, decode_batches, cfg, device)
    if rows:  # the table and plots from every stored row, also where a run was cut after its rows
        atomic_write_text(out / "table.md", render(build("speed", rows), "md"))
        speed_curves(rows, out)
    return rows


def checked_replacements(out, rows: list, kept: list, plan: dict, measured_as: str, train_tokens: int,
                         force: bool) -> list[str]:
    """What the bench replaces in the folder, a line each, once every check has passed: a refused
    bench replaces nothing, so it says nothing about replacing before its error."""
    notes = [f"{name}: replacing its rows measured under another config"
             for name in check_one_config(out, rows, plan, measured_as)]
    if any("train" in todo for todo in plan.values()):
        if models := check_one_batch_size(out, rows, kept, train_tokens, force):
            notes.append(f"{', '.join(models)}: replacing training rows measured at another number of tokens "
                         f"per batch")
    return notes


def check_one_config(out, rows: list, plan: dict, measured_as: str) -> list[str]:
    """A folder's run.json and table give its rows one config: a bench under another one may replace the
    sweeps it measures again (the models returned, for the bench to say so), but not leave other rows, of
    another model or of a sweep it does not run, to be labelled with its config."""
    other = {(r.model, r.task.removeprefix("speed_")) for r in rows
             if r.extra.get("config_id") not in (None, measured_as)}
    measuring = {(name, sweep) for name, todo in plan.items() for sweep in todo}
    if kept := sorted(other - measuring):
        held = ", ".join(f"{name} ({sweep})" for name, sweep in kept)
        raise ConfigError(f"{out} holds rows of {held} measured under another config, which this bench's run.json "
                          f"and table would label with its own; pass another --out, or bench those sweeps too")
    return sorted({name for name, _ in other & measuring})


def at_train_tokens(row, train_tokens: int) -> bool:
    """Whether a training row was measured at the batch `train_tokens` gives at its length: only such
    rows compare with this bench's (tokens/s grows with the batch)."""
    length = row.extra.get("seq_len")
    return row.extra.get("batch_tokens") == train_batch(length, train_tokens) * length


def check_one_batch_size(out, rows: list, kept: list, train_tokens: int, force: bool) -> list[str]:
    """A folder's training rows share one number of tokens per batch: its table bolds the fastest of
    a column and its curves join a model's lengths, and tokens/s grows with the batch, so rows at
    another batch size would win or bend them unseen. A bench measuring training at another one may
    replace such rows (`kept`: those its models' sweeps do not replace) with --force only, so that
    an afterthought does not discard hours of measurements; else it stops before anything is written.
    Returns the models whose rows it replaces, for the bench to say so."""
    def elsewhere(held: list) -> list:
        return [r for r in held if r.task == "speed_train" and not at_train_tokens(r, train_tokens)]
    other = elsewhere(rows)
    if not other:
        return []
    models = sorted({r.model for r in other})
    if force and not elsewhere(kept):
        return models
    first, length = other[0], other[0].extra.get("seq_len")
    raise ConfigError(f"{out} holds training rows of {', '.join(models)} measured at another batch size (e.g. "
                      f"{first.model} at length {length}: {first.extra.get('batch_tokens')} tokens per batch, here "
                      f"{train_batch(length, train_tokens) * length}), which its table would compare with these; pass "
                      f"another --out, the --train-tokens its run.json records, or --force with --models naming "
                      f"{', '.join(models)} to measure them again")


def record_stored(out, rows: list, points: list[Point], train_tokens: int, decode_batches, cfg: Config,
                  device: torch.device) -> None:
    """run.json once a model's points are stored, not before its sweeps: a bench cut short, or a sweep
    the model's library refused, records only the models, sweeps and lengths the rows hold. The
    settings are those of the sweeps measured (one not measured leaves the earlier record's value)."""
    from harness.results.provenance import record_run
    if not points:
        return
    sweeps = list(dict.fromkeys(p.sweep for p in points))
    train = [p for p in points if p.sweep == "train"]
    settings = {"train_tokens": train_tokens, "document_tokens": train[0].notes.get("document_tokens")} if train else {}
    if "decode" in sweeps:
        settings["decode_batches"] = list(decode_batches)
    record_run(out, {"models": [points[0].model], "sweeps": sweeps, "lengths": held_lengths(rows), **settings,
                     "config": cfg.to_dict()}, str(device))


def held_lengths(rows: list) -> dict:
    """run.json's lengths per sweep: those of the folder's rows, no others (not the default lengths
    of a sweep it did not run). A dict is not united with the earlier record's (`record_run`), so it
    is the whole folder's."""
    held: dict = {}
    for r in rows:
        sweep = r.task.removeprefix("speed_")
        held.setdefault(sweep, set()).add(r.extra.get("context" if sweep == "decode" else "seq_len"))
    return {s: sorted(held[s]) for s in SWEEPS if s in held}


def replaced_rows(name: str, sweeps, places: dict, measured_as: str, device: str, train_tokens: int) -> Callable:
    """Which stored rows a model's fresh sweeps replace: every row of those sweeps but the ones of
    the same config and device, and for training the same tokens per batch (`check_one_batch_size`),
    at lengths (and decode batches) this bench did not plan, kept beside the new ones. A folder holds
    one config per model and sweep, and one batch size per length: its table has one line for the
    model and one cell per length."""

    def replaced(row) -> bool:
        sweep = row.task.removeprefix("speed_")
        if row.model != name or sweep not in sweeps:
            return False
        return (not _same_measurement(row, measured_as, device) or _placed(row, places[sweep])
                or sweep == "train" and not at_train_tokens(row, train_tokens))
    return replaced


def profile_markdown(p: Point, stamp: dict) -> str:
    notes = ", ".join(f"{k}={v}" for k, v in p.notes.items())
    return (f"# {p.model}: where a training step's time goes\n\n"
            f"Sequence length {p.length:,}, batch {p.batch}, {stamp['device']} ({notes}); two steps after the "
            f"timing's warm-up, torch.profiler, top {PROFILE_ROWS} by self time. Command: `{stamp['command']}` "
            f"(commit {stamp['commit']}, {stamp['date']}).\n\n```\n{p.profile.rstrip()}\n```\n")


def model_params(names, cfg: Config) -> dict:
    from harness.model.build import matched_config, params_of
    return {n: params_of(n, matched_config(n, cfg.model)) for n in names}
