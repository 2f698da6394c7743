"""lm-eval adapter: any harness model (or checkpoint) as an lm-eval `LM`, plus offline task overlays.

`HarnessLM` scores requests with the model's plain forward (logits [B, T, V]); lm-eval does the
prompting and scoring. It is registered with lm-eval as `swat-harness`:

    harness-lm-eval --model swat-harness --model_args checkpoint=runs/small/swat/checkpoint --tasks piqa

(`harness-lm-eval` is lm-eval's own CLI with this module imported, because lm-eval 0.4 loads no
third-party model plugins by itself; it also adds the offline task overlays below.)

- `loglikelihood`: requests sorted by length (longest first) and cut into batches under a token
  budget; requests that differ only in a one-token continuation share one forward (lm-eval's
  `Collator(group_by="contexts")`). Inputs are right-padded: every model here is causal, so the
  padding never reaches a scored position. Log-probabilities are taken in fp32.
- `loglikelihood_rolling`: lm-eval's rolling windows of `max_length` tokens (default: the training
  length) that advance by `stride` tokens (default `max_length`: disjoint windows; a smaller stride
  gives every scored token at least `max_length - stride` tokens of context).
- `generate_until`: greedy (or sampled) decoding through the model's decode state (`prefill` once,
  then `step` per token: ring buffer for SWAT, KV cache for full attention, recurrent state),
  batched over prompts of equal length, stopping at lm-eval's `until` strings.

Data-parallel: launched by torchrun (`torchrun --nproc-per-node N -m harness eval ...`, or
`harness-lm-eval` likewise) each rank holds the model on its own GPU and lm-eval gives it every
N-th document; the adapter supplies lm-eval's rank, world size and collectives, and rank 0 gets
the metrics over all documents: the same numbers as one process.

Offline data: the hub is unreachable here, so every lm-eval task we run is an *overlay*: a YAML that
`include:`s lm-eval's own task YAML (prompts, metrics, version) and only swaps the data for the
mirror's JSONL files (`harness.data.mirror.require`). Overlays are rendered into the cache, because
they hold absolute paths (lm-eval's install, the mirror); `tasks/lm_eval/` holds the committed
group YAMLs. With `online=True` a task whose data is not mirrored keeps its hub path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.config import ConfigError
from harness.data.paths import DataError, cache_dir
from harness.training import distributed

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks" / "lm_eval"

# lm-eval task -> its built-in YAML (under lm_eval/tasks/) and the mirror dataset that feeds it.
# `wikitext_2_v1` is lm-eval's `wikitext` task on the tokenized WikiText-2 v1 text, the copy the
# mirror holds when the raw text is absent; its rows carry its own name so the two never mix.
LM_EVAL_TASKS: dict[str, tuple[str, str]] = {
    "lambada_openai": ("lambada/lambada_openai.yaml", "lambada_openai"),
    "piqa": ("piqa/piqa.yaml", "piqa"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag"),
    "winogrande": ("winogrande/default.yaml", "winogrande"),
    "arc_easy": ("arc/arc_easy.yaml", "arc_easy"),
    "arc_challenge": ("arc/arc_challenge.yaml", "arc_challenge"),
    "social_iqa": ("siqa/siqa.yaml", "social_iqa"),
    "boolq": ("super_glue/boolq/default.yaml", "boolq"),
    "wikitext": ("wikitext/wikitext.yaml", "wikitext"),
    "wikitext_2_v1": ("wikitext/wikitext.yaml", "wikitext_2_v1"),
}

# Hub configs of tasks that are not lm-eval's own (read when online and not mirrored).
HUB_CONFIGS = {"wikitext_2_v1": "wikitext-2-v1"}

# The metric the paper reports per task (PAPER.md); every metric lm-eval computes is still stored.
PAPER_METRICS: dict[str, tuple[str, ...]] = {
    "lambada_openai": ("acc", "perplexity"), "piqa": ("acc",), "hellaswag": ("acc_norm",),
    "winogrande": ("acc",), "arc_easy": ("acc",), "arc_challenge": ("acc_norm",), "social_iqa": ("acc",),
    "boolq": ("acc",), "wikitext": ("word_perplexity",), "wikitext_2_v1": ("word_perplexity",),
}

DEFAULT_BOOTSTRAP_ITERS = 1000  # stderr of perplexity-type metrics is bootstrapped; acc's is analytic
# how long ranks of a data-parallel evaluation wait for each other: rank 0 runs the tasks that are not
# data-parallel (length, retrieval) alone, which can take many minutes at long contexts
EVAL_TIMEOUT_S = 4 * 3600


def import_lm_eval():
    """lm_eval, imported with the hub switched off unless the user asked for it (HARNESS_ONLINE=1):
    `datasets` reads the offline flags at import, so they are set first."""
    if os.environ.get("HARNESS_ONLINE") != "1":
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import lm_eval
        import lm_eval.api.model  # noqa: F401
    except ImportError:
        raise ConfigError("lm-eval is not installed; pip install 'swat-harness[eval]'") from None
    return lm_eval


def require_data(name: str) -> dict[str, Path]:
    """{split: JSONL path} of a mirrored dataset, or a DataError naming the path and the fix."""
    from harness.data.mirror import require
    return require(name)


# ---------------------------------------------------------------- offline task overlays

def overlay_config(task: str, files: dict[str, Path] | None) -> dict:
    """The overlay YAML of one lm-eval task: include the built-in YAML, read `files` (None: keep
    the hub path). Splits the mirror lacks are switched off so lm-eval never asks the hub."""
    if task not in LM_EVAL_TASKS:
        raise ConfigError(f"no lm-eval overlay for task {task!r}; known: {', '.join(LM_EVAL_TASKS)}")
    lm_eval = import_lm_eval()
    builtin = Path(lm_eval.__file__).parent / "tasks" / LM_EVAL_TASKS[task][0]
    cfg: dict[str, Any] = {"include": str(builtin), "task": task}
    if files is not None:
        cfg.update(dataset_path="json", dataset_name=None,
                   dataset_kwargs={"data_files": {split: str(path) for split, path in sorted(files.items())}})
        for key, split in (("training_split", "train"), ("validation_split", "validation"),
                           ("test_split", "test")):
            cfg[key] = split if split in files else None
        cfg["fewshot_split"] = None
    elif task in HUB_CONFIGS:
        cfg["dataset_name"] = HUB_CONFIGS[task]
    return cfg


def task_files(tasks: list[str], online: bool = False) -> dict[str, dict[str, Path] | None]:
    """Mirror files per task, checked before any model work; None for a task left on the hub."""
    out = {}
    for task in tasks:
        if task not in LM_EVAL_TASKS:
            raise ConfigError(f"no lm-eval overlay for task {task!r}; known: {', '.join(LM_EVAL_TASKS)}")
        try:
            out[task] = require_data(LM_EVAL_TASKS[task][1])
        except DataError:
            if not online:
                raise
            out[task] = None
    return out


def mirrored_files() -> dict[str, dict[str, Path]]:
    """Mirror files of every lm-eval task whose data is present."""
    out = {}
    for task, (_, dataset) in LM_EVAL_TASKS.items():
        try:
            out[task] = require_data(dataset)
        except DataError:
            continue
    return out


def render_overlays(files: dict[str, dict[str, Path] | None]) -> Path:
    """Write the overlay YAMLs of `files` into a cache folder named by their content; return it."""
    import yaml
    configs = {task: overlay_config(task, f) for task, f in sorted(files.items())}
    groups = [g.read_text() for g in sorted(TASKS_DIR.glob("*.yaml"))]
    digest = hashlib.sha256(json.dumps([configs, groups], sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "lm_eval_tasks" / digest
    if not (folder / "done").is_file():
        from harness.files import atomic_write_text
        for task, cfg in configs.items():
            atomic_write_text(folder / f"{task}.yaml", yaml.safe_dump(cfg, sort_keys=False))
        for group in sorted(TASKS_DIR.glob("*.yaml")):  # our groups, so one include path holds all
            atomic_write_text(folder / group.name, group.read_text())
        atomic_write_text(folder / "done", "\n".join(configs) + "\n")
    return folder


_MANAGERS: dict[str, Any] = {}


def task_manager(overlay_dir: Path):
    """One lm-eval TaskManager per set of include paths (indexing lm-eval's tasks takes seconds)."""
    key = str(overlay_dir)
    if key not in _MANAGERS:
        import logging
        import_lm_eval()
        from lm_eval.tasks import TaskManager
        # our overlays replace built-in tasks by design: lm-eval's warning about each is noise
        logging.getLogger("lm_eval.tasks._index").setLevel(logging.ERROR)
        _MANAGERS[key] = TaskManager(include_path=key)
    return _MANAGERS[key]


# ---------------------------------------------------------------- the adapter

def _template_lm():
    """lm-eval's TemplateLM, or `object` when lm-eval is absent (the adapter then refuses to start
    with the install hint, and the tasks that do not use lm-eval still run)."""
    try:
        import_lm_eval()
    except ConfigError:
        return object
    from lm_eval.api.model import TemplateLM
    return TemplateLM


def _as_int(value, key: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"swat-harness model argument {key} must be an integer, got {value!r}") from None


# ---------------------------------------------------------------- Hugging Face checkpoints

class HFTokenizer:
    """A transformers tokenizer behind the harness tokenizer interface (no special tokens added)."""

    def __init__(self, tok, name: str):
        self._tok, self.name = tok, name
        self.vocab_size = len(tok)
        if tok.eos_token_id is None:
            raise DataError(f"tokenizer of {name} has no end-of-sequence token")
        self.eos_id = tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids))


class HFCausalLM(torch.nn.Module):
    """A transformers causal LM (e.g. an fla recurrent model) behind the harness model contract:
    logits from forward, and the decode state (`past_key_values`: the model's recurrent state or
    KV cache) through prefill/step/generate."""

    def __init__(self, model):
        super().__init__()
        self.hf = model

    def forward(self, input_ids):
        return self.hf(input_ids=input_ids, use_cache=False).logits

    def prefill(self, input_ids):
        out = self.hf(input_ids=input_ids, use_cache=True)
        return out.logits, out.past_key_values

    def step(self, input_ids, state):
        out = self.hf(input_ids=input_ids.reshape(-1, 1), past_key_values=state, use_cache=True)
        return out.logits[:, -1], out.past_key_values

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens: int, **_):
        logits, state = self.prefill(input_ids)
        token, out = logits[:, -1].argmax(-1), []
        for i in range(max_new_tokens):
            out.append(token)
            if i + 1 < max_new_tokens:
                logits, state = self.step(token, state)
                token = logits.argmax(-1)
        return torch.stack(out, dim=1)


def load_hf(path: str, device: str):
    """(model, tokenizer, max_length) of a Hugging Face checkpoint folder; fla's models register
    themselves with transformers when fla is importable."""
    try:
        import transformers
    except ImportError:
        raise ConfigError("hf: checkpoints need transformers (and fla for its recurrent models): "
                          "pip install transformers 'swat-harness[fla]'") from None
    try:
        import fla  # noqa: F401  (registers GLA, RetNet, HGRN2, DeltaNet, ... with transformers)
    except ImportError:
        pass
    if not Path(path).is_dir():
        raise FileNotFoundError(f"hf:{path}: no such folder; pass a local Hugging Face checkpoint folder")
    dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype).to(device).eval()
    tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(path), Path(path).name)
    length = getattr(model.config, "max_position_embeddings", None) or 2048
    return HFCausalLM(model), tokenizer, length


class HarnessLM(_template_lm()):
    """An lm-eval LM over a harness model: pass `checkpoint=` (a checkpoint folder or hf:<path>), or
    `model=` and `tokenizer=` objects directly (what `harness eval` and the task runners do)."""

    def __init__(self, checkpoint: str | None = None, model=None, tokenizer=None, device: str | None = None,
                 batch_size: int | str | None = 64, max_batch_tokens: int | str | None = 32768,
                 max_length: int | str | None = None, stride: int | str | None = None,
                 dtype: str | None = None, max_batch_size: int | None = None, progress: bool = True, **unused):
        import_lm_eval()
        super().__init__()
        if unused:
            raise ConfigError(f"unknown swat-harness model arguments: {', '.join(sorted(unused))}; known: "
                              "checkpoint, device, batch_size, max_batch_tokens, max_length, stride, dtype")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if distributed.launched_by_torchrun():  # lm-eval shards the documents over the ranks
            d = distributed.setup(device, timeout_s=EVAL_TIMEOUT_S)
            device, self._rank, self._world_size = str(d.device), d.rank, d.world_size
        train_length, train_dtype = None, "fp32"
        if checkpoint is not None:
            model, tokenizer, cfg, _ = ModelSource(str(checkpoint), str(checkpoint)).load(device)
            train_length, train_dtype = cfg.model.max_seq_len, cfg.train.dtype
        elif model is None or tokenizer is None:
            raise ConfigError("swat-harness needs checkpoint=PATH (or model and tokenizer objects)")
        else:
            train_length = getattr(getattr(model, "cfg", None), "max_seq_len", None)
        self.model = model.eval()
        self.tok = tokenizer
        self._device = torch.device(device)
        if batch_size is None or str(batch_size).startswith("auto"):  # lm-eval's "auto": our token budget
            batch_size = max_batch_size or 64                          # decides, up to max_batch_size
        self.batch_size = _as_int(batch_size, "batch_size")
        self.max_batch_tokens = _as_int(max_batch_tokens, "max_batch_tokens")
        self.max_length = _as_int(max_length, "max_length") or train_length
        if not self.max_length:
            raise ConfigError("swat-harness needs max_length=N for a model without a training length")
        self.stride = _as_int(stride, "stride") or self.max_length
        if not 1 <= self.stride <= self.max_length:
            raise ConfigError(f"stride={self.stride} must be between 1 and max_length={self.max_length}")
        from harness.training.recipe import autocast_for
        self.autocast = autocast_for(self._device, dtype or train_dtype)
        self.progress = progress  # tqdm bars (lm-eval's style); off under `harness run` / `harness eval`

    # -- lm-eval's collectives (used when world_size > 1)
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor, concatenated along the first dimension (a scalar counts as [1])."""
        if self.world_size <= 1:
            return tensor
        flat = tensor.reshape(1) if tensor.dim() == 0 else tensor
        parts = [torch.empty_like(flat) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, flat)
        return torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        if self.world_size <= 1:
            return [obj]
        out = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    # -- tokenizer interface of TemplateLM
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tok, "name", type(self.tok).__name__)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, tokens) -> str:
        return self.tok.decode(tokens)

    # -- scoring
    @torch.no_grad()
    def _forward_logprobs(self, rows: list[list[int]]) -> list[torch.Tensor]:
        """Next-token log-probabilities [len(row), V] (fp32) of each row, one right-padded forward."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tok.eos_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        with self.autocast():
            logits = self.model(ids.to(self._device))
        return [F.log_softmax(logits[i, :len(r)].float(), dim=-1) for i, r in enumerate(rows)]

    def _batches(self, items: list, length) -> list[list]:
        """Consecutive batches of length-sorted items under batch_size and max_batch_tokens (the
        first item of a batch is its longest, so it sets the padded width)."""
        batches, current = [], []
        for item in items:
            width = length(current[0]) if current else length(item)
            if current and (len(current) >= self.batch_size or
                            (len(current) + 1) * width > self.max_batch_tokens):
                batches.append(current)
                current = []
            current.append(item)
        if current:
            batches.append(current)
        return batches

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, share_contexts: bool = True):
        """[(sum of continuation log-probs, whether greedy decoding gives the continuation)] per
        request ((strings or None, context tokens, continuation tokens)); contexts are cut from the
        left to fit max_length, as lm-eval's HF model does, but a continuation longer than that is
        kept whole (every model here runs at any length, and a cut continuation is a wrong score)."""
        from lm_eval.models.utils import Collator
        from tqdm import tqdm

        def inputs(req):
            keep = max(self.max_length, len(req[2])) + 1
            return (req[1] + req[2])[-keep:][:-1]

        collator = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])),
                            group_by="contexts" if share_contexts else None,
                            group_fn=lambda r: r[1] + r[2][:-1])
        ordered = list(collator.get_batched(n=0))
        ordered = ordered[0] if ordered else []
        results = []
        bar = tqdm(total=len(requests), disable=disable_tqdm or not self.progress, desc="loglikelihood")
        for batch in self._batches(ordered, lambda r: len(inputs(r))):
            logprobs = self._forward_logprobs([inputs(r) for r in batch])
            for (strings, ctx, cont), lp in zip(batch, logprobs):
                span = lp[len(lp) - len(cont):].unsqueeze(0)  # [1, len(cont), V]
                for req_strings, cont_toks, cont_lp in collator.get_cache(strings, ctx, cont, span):
                    target = torch.tensor(cont_toks, device=cont_lp.device)
                    picked = cont_lp[0].gather(-1, target[:, None]).squeeze(-1)
                    answer = (float(picked.sum()), bool((cont_lp[0].argmax(-1) == target).all()))
                    results.append(answer)
                    if req_strings is not None:
                        self.cache_hook.add_partial("loglikelihood", req_strings, answer)
                    bar.update(1)
        bar.close()
        return collator.get_original(results)

    def rolling_windows(self, tokens: list[int]) -> list[tuple[list[int], list[int]]]:
        """(context, continuation) windows that score every token of `tokens` exactly once."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        return [make_disjoint_window(w) for w in get_rolling_token_windows(
            token_list=tokens, prefix_token=self.eot_token_id, max_seq_len=self.max_length,
            context_len=self.max_length - self.stride + 1)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, req in enumerate(requests):
            for ctx, cont in self.rolling_windows(self.tok_encode(req.args[0])):
                windows.append((None, ctx, cont))
                owner.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm, share_contexts=False)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, scores):
            totals[i] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # -- generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not (hasattr(self.model, "prefill") and hasattr(self.model, "step")):
            raise ConfigError(f"{type(self.model).__name__} has no prefill()/step() (a decode state), which "
                              "generation tasks need; give it those (the shared backbone has them) or run "
                              "scoring tasks only")
        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        encoded = []
        for i, req in enumerate(requests):
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", 256))
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            ids = self.tok_encode(context)[-max(1, self.max_length - max_new):] or [self.eot_token_id]
            encoded.append((ids, until, max_new, temperature))
            groups.setdefault((len(ids), tuple(until), max_new, temperature), []).append(i)
        for (_, until, max_new, temperature), members in groups.items():
            for lo in range(0, len(members), self.batch_size):
                chunk = members[lo:lo + self.batch_size]
                prompts = torch.tensor([encoded[i][0] for i in chunk], dtype=torch.long, device=self._device)
                texts = self.decode_until(prompts, list(until), max_new, temperature)
                for i, text in zip(chunk, texts):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    @torch.no_grad()
    def decode_until(self, prompts: torch.Tensor, until: list[str], max_new: int,
                     temperature: float = 0.0) -> list[str]:
        """Continuations of equal-length prompts [B, T] through the decode state, each cut at the
        first stop string; decoding ends when every sequence has stopped or max_new is reached."""
        from harness.model.backbone import sample
        stops = [s for s in until if s]  # the end-of-sequence token stops a sequence by its id
        B = prompts.shape[0]
        with self.autocast():
            logits, state = self.model.prefill(prompts)
        next_logits = logits[:, -1]
        tokens: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        for _ in range(max_new):
            token = sample(next_logits.float(), temperature)
            for b in range(B):
                if not done[b]:
                    if int(token[b]) == self.eot_token_id:
                        done[b] = True
                        continue
                    tokens[b].append(int(token[b]))
                    text = self.tok.decode(tokens[b])
                    done[b] = any(s in text for s in stops)
            if all(done):
                break
            with self.autocast():
                next_logits, state = self.model.step(token, state)
        texts = []
        for b in range(B):
            text = self.tok.decode(tokens[b])
            for s in stops:
                text = text.split(s)[0]
            texts.append(text)
        return texts


def _register() -> None:
    if HarnessLM.__bases__ == (object,):
        return
    from lm_eval.api.registry import model_registry, register_model
    if "swat-harness" not in model_registry:
        register_model("swat-harness")(HarnessLM)


_register()


# ---------------------------------------------------------------- running lm-eval tasks

@functools.cache
def _compiled_template(template: str):
    from lm_eval import utils
    return utils.env.from_string(template)


def cache_prompt_templates() -> None:
    """Compile each of lm-eval's Jinja prompt templates once. lm-eval 0.4 compiles the template anew
    for every document and field (`utils.apply_template` -> `env.from_string`): 23 of the 52 s of a
    LAMBADA evaluation on a 2-core CPU. Same environment, same templates: the rendered prompts are
    identical."""
    from lm_eval import utils
    if getattr(utils.apply_template, "compiles_once", False):
        return

    def apply_template(template: str, doc: dict) -> str:
        return _compiled_template(template).render(**doc)
    apply_template.compiles_once = True
    utils.apply_template = apply_template


def quiet_lm_eval() -> None:
    """Silence what lm-eval and `datasets` print besides the results, for `harness run` and `harness
    eval`, whose own progress lines their tqdm bars would cut into: the bars over documents and
    cached requests, the dataset builders' bars, lm-eval's notes on its task configs (defaults it
    fills in), and the `git describe` that lm-eval runs for its results' metadata (outside a git
    checkout it prints `fatal: not a git repository` per task). Errors still show."""
    import logging

    import datasets
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.evaluator
    from tqdm import tqdm

    from harness.results.provenance import git_commit

    def no_bar(*args, **kwargs):  # also where lm-eval passes disable= itself
        return tqdm(*args, **{**kwargs, "disable": True})
    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    for module in (lm_eval.api.model, lm_eval.api.task):
        module.tqdm = no_bar
    lm_eval.evaluator.get_git_commit_hash = git_commit


def run_tasks(lm: HarnessLM, tasks: list[str], limit: int | None = None, online: bool = False,
              bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS, cache: str | Path | None = None) -> dict:
    """lm-eval's `simple_evaluate` on our overlays of `tasks` (data checked first). `cache`: a
    SQLite file of lm-eval's request cache, so an interrupted evaluation resumes where it stopped."""
    files = task_files(tasks, online)  # fails here, before any model work, when data is missing
    # one overlay folder for everything mirrored, so every call shares one TaskManager
    overlay = render_overlays({**mirrored_files(), **files})
    from lm_eval import simple_evaluate
    cache_prompt_templates()
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
    return simple_evaluate(model=lm, tasks=list(tasks), limit=limit, bootstrap_iters=bootstrap_iters,
                           task_manager=task_manager(overlay), use_cache=str(cache) if cache else None,
                           log_samples=True)


def document_bootstrap_stderr(samples: list[dict], metric: str, iters: int, seed: int = 1234) -> float | None:
    """Bootstrap stderr of a corpus-level metric (lm-eval gives none for word perplexity and the
    other weighted aggregates): resample documents with replacement, re-aggregate with lm-eval's
    own aggregation function, take the standard deviation."""
    import numpy as np
    from lm_eval.api.registry import get_metric_aggregation
    # in document order: a data-parallel evaluation gathers the samples rank by rank
    items = [s[metric] for s in sorted(samples, key=lambda s: s.get("doc_id", 0)) if metric in s]
    if len(items) < 2 or iters <= 0:
        return None
    aggregate = get_metric_aggregation(metric)
    rng = np.random.default_rng(seed)
    values = [aggregate([items[j] for j in rng.integers(len(items), size=len(items))]) for _ in range(iters)]
    return float(np.std(values, ddof=1))


def result_rows(results: dict, ctx, limit: int | None, bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS) -> list:
    """Rows in the common schema, one per (task, metric): value, stderr, n, task_version, limit."""
    rows = []
    for task, metrics in results["results"].items():
        if task not in LM_EVAL_TASKS:
            continue
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        version = results.get("versions", {}).get(task)
        for key, value in metrics.items():
            metric, comma, filt = key.partition(",")  # lm-eval's metric keys are "metric,filter"
            if not comma or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) else None
            if stderr is None:
                stderr = document_bootstrap_stderr(results.get("samples", {}).get(task, []), metric,
                                                   bootstrap_iters)
            rows.append(ctx.row(task, metric, value, stderr=stderr, n=n, task_version=version, limit=limit,
                                paper_metric=metric in PAPER_METRICS.get(task, ())))
    return rows


def lm_eval_task_rows(task: str, model, tokenizer, ctx) -> list:
    """The task runner behind every lm-eval task of `harness run` / `harness eval`."""
    lm = HarnessLM(model=model, tokenizer=tokenizer, device=ctx.device,
                   max_length=ctx.cfg.model.max_seq_len, dtype=ctx.cfg.train.dtype, progress=False)
    quiet_lm_eval()
    options = ctx.options  # `harness eval` sets cache_dir, online, bootstrap_iters; `harness run` uses defaults
    cache = options.get("cache_dir")
    iters = options.get("bootstrap_iters", DEFAULT_BOOTSTRAP_ITERS)
    results = run_tasks(lm, [task], limit=ctx.limit, online=options.get("online", False), bootstrap_iters=iters,
                        cache=Path(cache) / f"{task}.sqlite" if cache else None)
    if results is None:  # a rank other than 0 of a data-parallel evaluation: rank 0 holds the metrics
        return []
    return result_rows(results, ctx, ctx.limit, iters)


# ---------------------------------------------------------------- `harness eval`

# Datasets each data-reading task needs (any one of the alternatives), checked before model work.
TASK_DATA: dict[str, tuple[str, ...]] = {
    **{task: (dataset,) for task, (_, dataset) in LM_EVAL_TASKS.items()},
    "length": ("wikitext", "wikitext_2_v1"),
}


def missing_data(task: str, online: bool = False) -> DataError | None:
    """The DataError of a task whose data is absent (None when present or not needed)."""
    if online and task in LM_EVAL_TASKS:
        return None
    errors = []
    for dataset in TASK_DATA.get(task, ()):
        try:
            require_data(dataset)
            return None
        except DataError as err:
            errors.append(err)
    return errors[0] if errors else None


@dataclass
class ModelSource:
    """What to evaluate: a `harness train` checkpoint folder, or `hf:<path>`."""
    name: str
    checkpoint: str

    def load(self, device: str):
        """(model, tokenizer, Config, meta)."""
        from harness.config import Config, ModelConfig, TrainConfig
        if self.checkpoint.startswith("hf:"):
            model, tokenizer, length = load_hf(self.checkpoint[3:], device)
            cfg = Config("hf", ModelConfig(vocab_size=tokenizer.vocab_size, max_seq_len=length),
                         TrainConfig(dtype="bf16", tokenizer=self.checkpoint[3:]))
            from harness.model.backbone import count_params
            return model, tokenizer, cfg, {"params": count_params(model), "tokens": None}
        from harness.data.tokenizer import get_tokenizer
        from harness.training.checkpoint import load_checkpoint
        model, cfg, _, meta = load_checkpoint(Path(self.checkpoint), device)
        return model, get_tokenizer(cfg.train.tokenizer), cfg, meta


def model_sources(run: str, runs_dir: Path, models: list[str], checkpoints: list[str]) -> list[ModelSource]:
    """Sources from `--models` (run model names, or hf:<path>) and `--checkpoint` folders; with
    neither, every finished checkpoint under runs/<run>/."""
    out = [ModelSource(Path(c).resolve().parent.name, str(c)) for c in checkpoints]
    for name in models:
        if name.startswith("hf:"):
            out.append(ModelSource("hf-" + Path(name[3:]).name, name))
        else:
            out.append(ModelSource(name, str(Path(runs_dir) / run / name / "checkpoint")))
    if not out:
        folder = Path(runs_dir) / run
        out = [ModelSource(p.parent.parent.name, str(p.parent))
               for p in sorted(folder.glob("*/checkpoint/meta.json"))]
        if not out:
            raise FileNotFoundError(f"no checkpoints under {folder}; train first (`harness run` or `harness "
                                    f"train`), or pass --checkpoint PATH or --models hf:PATH")
    for source in out:
        if not source.checkpoint.startswith("hf:") and not (Path(source.checkpoint) / "meta.json").is_file():
            raise FileNotFoundError(f"{source.checkpoint} is not a checkpoint folder (no meta.json); pass the "
                                    f"folder that `harness train` wrote (<runs>/<run>/<model>/checkpoint)")
    return out


def request_cache(run: str, source: ModelSource) -> Path:
    """lm-eval's request cache of one checkpoint version: keyed by the weights file's size and
    modification time, so a retrained checkpoint of the same name never reuses old answers."""
    path = Path(source.checkpoint.removeprefix("hf:"))
    weights = path / "model.safetensors" if (path / "model.safetensors").is_file() else path
    stat = weights.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "lm_eval_requests" / f"{run}-{source.name}-{digest}"


def evaluate(sources: list[ModelSource], task_names: list[str], run: str, results_dir: Path,
             device: str, limit: int | None = None, force: bool = False, online: bool = False,
             skip_missing: bool = False, bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
             log=print, grouped: frozenset = frozenset()) -> list:
    """Run tasks on each model source and merge the rows into results/<run>/rows.jsonl (written after
    every task; finished (model, task) pairs are skipped unless `force`; lm-eval's request cache
    per checkpoint version (`request_cache`) lets an interrupted task resume).

    Under torchrun every rank loads each model on its own GPU; lm-eval's tasks are split over the
    ranks, the others run on rank 0 alone, and rank 0 alone logs and writes. grouped: the tasks that a
    group name brought in; missing data skips them with a warning."""
    from harness.files import atomic_write_text
    from harness.registry import get_task
    from harness.results.provenance import command_line, device_name, git_commit, now
    from harness.results.tables import rows_table
    from harness.runner import (
        TaskContext,
        check_task_data,
        join_job,
        run_tasks,
        stored_rows,
    )
    d, device, log = join_job(device, log)
    main = d is None or d.is_main
    runnable = check_task_data([get_task(t) for t in task_names], online, skip_missing, log, grouped)
    out = Path(results_dir) / run
    rows_file = out / "rows.jsonl"
    existing = stored_rows(rows_file, d, log)
    done = {(r.model, r.task) for r in existing}
    provenance = {"commit": git_commit(), "device": device_name(device), "date": now(), "command": command_line()}
    for source in sources:
        pending = [t for t in runnable if force or (source.name, t.name) not in done]
        if not pending:
            log(f"{source.name}: all tasks done already (pass --force to redo)")
            continue
        model, tokenizer, cfg, meta = source.load(device)
        cache = request_cache(run, source)
        if force and main:
            shutil.rmtree(cache, ignore_errors=True)
        if d is not None:
            d.barrier()
        ctx = TaskContext(cfg, run, source.name, device, meta.get("params"), meta.get("tokens"),
                          source.checkpoint, limit, provenance,
                          options={"online": online, "bootstrap_iters": bootstrap_iters, "cache_dir": str(cache)},
                          dist=d)
        existing = run_tasks(model, tokenizer, ctx, pending, existing, rows_file, log)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if existing and main:
        atomic_write_text(out / "table.md", rows_table(existing))
    return existing


def lm_eval_cli() -> None:
    """lm-eval's own command line with `swat-harness` registered and the overlays of every mirrored
    task (plus our groups) as the include path: `harness-lm-eval --model swat-harness ...`."""
    args = sys.argv[1:]
    command = [args.pop(0)] if args and args[0] in ("run", "ls", "validate") else ["run"]
    if "--include_path" not in args and command[0] != "validate":
        args = ["--include_path", str(render_overlays(mirrored_files())), *args]
    sys.argv = [sys.argv[0], *command, *args]
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    lm_eval_cli()
