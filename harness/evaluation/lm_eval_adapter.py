"""lm-eval adapter: any harness model (or checkpoint) as an lm-eval `LM`.

`HarnessLM` scores requests with the model's plain forward (logits [B, T, V]); lm-eval does the
prompting and scoring. It is registered with lm-eval as `swat-harness`:

    harness-lm-eval --model swat-harness --model_args checkpoint=runs/small/swat/checkpoint --tasks piqa

(`harness-lm-eval`, harness.lm_eval_cli, is lm-eval's own CLI with this module imported.)

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
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from harness.config import ConfigError
from harness.evaluation.sources import source_for
from harness.training import distributed
from harness.training.distributed import EVAL_TIMEOUT_S

ROLLING_CHUNK_WINDOWS = 256  # rolling windows scored between two hand-overs to the request cache


def import_lm_eval():
    """lm_eval, imported with the hub switched off unless the user asked for it (HARNESS_ONLINE=1):
    `datasets` reads the offline flags at import, so they are set first."""
    if os.environ.get("HARNESS_ONLINE") != "1":
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # lm-eval's bootstrap stderr forks a pool of one process per CPU from this process, which holds
    # threads (torch's, the request cache's): a fork that can deadlock, and on a machine shared by
    # several evaluations a pool each; in-process resampling gives the same estimate
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    try:
        import lm_eval
        import lm_eval.api.model  # noqa: F401
    except ImportError:
        raise ConfigError("lm-eval is not installed; pip install 'swat-harness[eval]'") from None
    return lm_eval


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


def checked_device(device: str | None) -> str:
    """The device to run on: the harness's default where none is asked for, else the one asked for
    once the harness can run there (lm-eval hands its --device to the model unchecked, and `cuda` on
    a machine without CUDA failed deep inside the model's build with a traceback)."""
    from harness.evaluation.loop import default_device, device_problem
    if device is None:
        return default_device()
    if problem := device_problem(device):
        raise ConfigError(problem)
    return device


class HarnessLM(_template_lm()):
    """An lm-eval LM over a harness model: pass `checkpoint=` (a checkpoint folder or hf:<path>), or
    `model=` and `tokenizer=` objects directly (what `harness eval` and the task runners do)."""

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "HarnessLM":
        """lm-eval's way in (`--model_args`, read into a dict), where what the user spelled in
        --model_args wins over lm-eval's own settings of the same name: lm-eval always hands its
        --device and --batch_size too, so `--model_args checkpoint=...,device=cpu` was a TypeError
        (two values for `device`)."""
        settings = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**settings, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "HarnessLM":
        from lm_eval import utils
        return cls.create_from_arg_obj(utils.simple_parse_args_string(arg_string), additional_config)

    def __init__(self, checkpoint: str | None = None, model=None, tokenizer=None, device: str | None = None,
                 batch_size: int | str | None = 64, max_batch_tokens: int | str | None = 32768,
                 max_length: int | str | None = None, stride: int | str | None = None,
                 dtype: str | None = None, max_batch_size: int | None = None, progress: bool = True, **unused):
        import_lm_eval()
        super().__init__()
        if unused:
            raise ConfigError(f"unknown swat-harness model arguments: {', '.join(sorted(unused))}; known: "
                              "checkpoint, device, batch_size, max_batch_tokens, max_length, stride, dtype")
        device = checked_device(device)
        if distributed.launched_by_torchrun():  # lm-eval shards the documents over the ranks
            d = distributed.setup(device, timeout_s=EVAL_TIMEOUT_S)
            device, self._rank, self._world_size = str(d.device), d.rank, d.world_size
        train_length, train_dtype = None, "fp32"
        if checkpoint is not None:
            loaded = source_for(str(checkpoint)).load(device)
            model, tokenizer, cfg = loaded.model, loaded.tokenizer, loaded.cfg
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
    def _forward_logprobs(self, rows: list[list[int]], last: list[int]) -> list[torch.Tensor]:
        """Next-token log-probabilities [last[i], V] (fp32) at the last last[i] positions of each
        row (the continuation's: the context's need no normalising), one right-padded forward."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tok.eos_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        with self.autocast():
            logits = self.model(ids.to(self._device))
        return [F.log_softmax(logits[i, len(r) - n:len(r)].float(), dim=-1)
                for i, (r, n) in enumerate(zip(rows, last))]

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

        # requests of one input (context + continuation but its last token) share a forward; they may
        # split it differently ("hello wor" + "ld", "hello worl" + "x"), so the shared span covers the
        # longest continuation among them and each takes its own last positions of it
        longest: dict[tuple, int] = {}
        for _, ctx, cont in requests if share_contexts else ():
            longest[tuple(ctx + cont[:-1])] = max(longest.get(tuple(ctx + cont[:-1]), 0), len(cont))

        def span_len(req) -> int:
            return longest[tuple(req[1] + req[2][:-1])] if share_contexts else len(req[2])

        def inputs(req):
            keep = max(self.max_length, span_len(req)) + 1
            return (req[1] + req[2])[-keep:][:-1]

        collator = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])),
                            group_by="contexts" if share_contexts else None,
                            group_fn=lambda r: r[1] + r[2][:-1])
        ordered = list(collator.get_batched(n=0))
        ordered = ordered[0] if ordered else []
        results = []
        bar = tqdm(total=len(requests), disable=disable_tqdm or not self.progress, desc="loglikelihood")
        for batch in self._batches(ordered, lambda r: len(inputs(r))):
            spans = self._forward_logprobs([inputs(r) for r in batch], [span_len(r) for r in batch])
            # one entry per request: requests of one input share a span, each scoring its own tail of it
            scored = [(req_strings, span[len(span) - len(cont_toks):], cont_toks)
                      for (strings, ctx, cont), span in zip(batch, spans)
                      for req_strings, cont_toks, _ in collator.get_cache(strings, ctx, cont, span[None])]
            for (req_strings, _, _), answer in zip(scored, self._score(scored)):
                results.append(answer)
                if req_strings is not None:
                    self.cache_hook.add_partial("loglikelihood", req_strings, answer)
                bar.update(1)
        bar.close()
        return collator.get_original(results)

    @staticmethod
    def _score(scored: list) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probs, whether greedy decoding gives it) for each (strings,
        span [len, V], continuation tokens). The tokens go to the device in one copy and the answers
        come back in one: a float() per request would wait for the GPU each time, and where several
        processes share it each wait can last a time slice of the others'."""
        device = scored[0][1].device
        tokens = torch.tensor([t for _, _, toks in scored for t in toks], device=device)
        sums, greedy, at = [], [], 0
        for _, span, toks in scored:
            target = tokens[at:at + len(toks)]
            at += len(toks)
            sums.append(span.gather(-1, target[:, None]).squeeze(-1).sum())
            greedy.append((span.argmax(-1) == target).all())
        return list(zip(torch.stack(sums).tolist(), torch.stack(greedy).tolist()))

    def rolling_windows(self, tokens: list[int]) -> list[tuple[list[int], list[int]]]:
        """(context, continuation) windows that score every token of `tokens` exactly once."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        return [make_disjoint_window(w) for w in get_rolling_token_windows(
            token_list=tokens, prefix_token=self.eot_token_id, max_seq_len=self.max_length,
            context_len=self.max_length - self.stride + 1)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each document's total log-likelihood over its rolling windows, scored a chunk of documents
        (ROLLING_CHUNK_WINDOWS windows or more) at a time, each chunk's totals handed to the request
        cache as it ends: an evaluation cut short resumes from the documents it had scored."""
        totals = [0.0] * len(requests)
        chunk: list[int] = []
        windows: list[tuple] = []
        owner: list[int] = []
        for i, req in enumerate(requests):
            chunk.append(i)
            for ctx, cont in self.rolling_windows(self.tok_encode(req.args[0])):
                windows.append((None, ctx, cont))
                owner.append(i)
            if len(windows) >= ROLLING_CHUNK_WINDOWS or i == len(requests) - 1:
                for k, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm,
                                                                              share_contexts=False)):
                    totals[k] += logprob
                for k in chunk:
                    self.cache_hook.add_partial("loglikelihood_rolling", requests[k].args, totals[k])
                chunk, windows, owner = [], [], []
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
