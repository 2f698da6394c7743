"""`harness export`: a checkpoint as a Hugging Face model folder that transformers and lm-eval load
with no harness installed (fla's models: with fla installed).

    config.json                      the model's config (an attention model's: SwatHarnessConfig,
                                     model_type swat_harness, auto_map; fla's or transformers' own)
    model.safetensors                the weights (model-0000N-of-0000M.safetensors + index above
                                     --max-shard-size), written by transformers' save_pretrained
    *.py                             the modelling code where transformers has none: an attention
                                     model's (harness/hf/, plain PyTorch), or modeling_fla.py (it
                                     imports fla); loaded with trust_remote_code=True
    generation_config.json
    tokenizer.json, tokenizer_config.json
    README.md                        the model card: data, tokens, recipe, commit, evaluation rows

A model exports when it is the shared backbone with SwiGLU blocks whose token mixers are the
harness's attention layers, whoever registered it (attention_export.py: the files above, the
weights under Llama-style names), fla's layers as the fla baselines build them (fla_export.py:
fla's own model class, fla's config.json and modeling_fla.py, which imports fla), or the mamba
baseline's Mamba-1 blocks (mamba_export.py: transformers' own MambaForCausalLM, config.json and the
weights, no code). Any other model stops with one line saying why, in its mixer's words where the
mixer says (`export_refused`), e.g. that the Hugging Face Mamba-2 classes derive another inner width.
This module writes the folder around any of them: tokenizer, model card, shards, the rename into place.

Tokenizer: the run's tokenizer.json with its post-processor removed (the harness never adds a
BOS or other template tokens, and lm-eval's HF model encodes with the tokenizer's defaults) and no
BOS token declared (lm-eval then prefixes an empty context with EOS, as the harness does); the
tiny preset's `bytes` tokenizer becomes an equivalent byte-level `tokenizers` BPE with no merges
(byte b is id b, `<|endoftext|>` is 256), so AutoTokenizer gives the harness's ids. transformers makes
the EOS token a special token that it finds inside text; where the harness's tokenizer does not (the
`bytes` one, Llama-2's), tokenizer_config.json sets split_special_tokens, so that text holding the
token's string is encoded as the harness encodes it (tokenizer.json read by `tokenizers` alone still
finds it). The export checks the ids of each added token's string in text and warns where they differ.

The model card lists the rows of the checkpoint's current weights: rows that name other weights (the
checkpoint retrained since they were scored) are left out with a warning.

The folder is written into a temporary sibling and renamed into place, so an error leaves nothing
at --out; --push-to-hub uploads it before the rename and checks the hub first.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

from harness.config import Config, ConfigError, first_line
from harness.data.corpus import HUB_CORPORA
from harness.data.tokenizer import ByteTokenizer, get_tokenizer
from harness.files import share_like_any_file
from harness.hf.mapping import HFExport
from harness.hf.progress import no_transformers_bars
from harness.registry import MissingExtraError
from harness.results.store import ResultsError, Row, read_given_rows, read_rows

SHARD_SIZE = re.compile(r"(-?[0-9]+)([a-z]*)", re.IGNORECASE)  # a whole number and its unit, each checked apart
SHARD_EXAMPLES = "2GB, 500MB, 100KB or 1GiB"
SHARD_UNIT_BYTES = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
SHARD_UNITS = {unit.upper(): size for unit, size in SHARD_UNIT_BYTES.items()}  # the unit as matched, any case
BYTE_EOS = "<|endoftext|>"


class ExportError(RuntimeError):
    """A checkpoint cannot be exported as asked; the message says why and what to do."""


ONLY = ("only models on the shared backbone whose layers are the harness's attention mixers (harness.model."
        "attention), the mamba baseline's Mamba-1 mixers (baselines.mamba) or fla's layers as the fla baselines "
        "build them export to Hugging Face today")


def exporter(model) -> tuple[Callable, Callable]:
    """(why it has no export, the export) of a backbone model, by its layers: fla's layers export as fla's
    classes (fla_export), the Mamba-1 mixers as transformers' Mamba (mamba_export), any other as the harness's
    attention classes (attention_export), which refuse what they do not hold."""
    from harness.hf.attention_export import attention_export, attention_refusal
    from harness.hf.fla_export import fla_export, fla_refusal, is_fla_model
    from harness.hf.mamba_export import is_mamba_model, mamba_export, mamba_refusal
    if is_fla_model(model):
        return fla_refusal, fla_export
    if is_mamba_model(model):
        return mamba_refusal, mamba_export
    return attention_refusal, attention_export


def run_record(name: str, cfg, meta: dict) -> dict:
    """What config.json records of the run a folder was exported from, for `harness eval --models
    hf:<folder>`: the model's harness name; its held-out data (corpus, window length, tokens scored),
    so that the folder is scored on the checkpoint's documents, windows and token count; and the preset
    and tokens it trained on, so that its rows stand beside the checkpoint's in a table."""
    return {"harness_model": name,
            "harness_heldout": {"corpus": cfg.train.corpus, "seq_len": cfg.train.seq_len,
                                "eval_tokens": cfg.train.eval_tokens},
            "harness_trained": {"preset": cfg.preset, "tokens": meta["tokens"]}}


def export_refusal(model) -> str | None:
    """Why `model` has no Hugging Face export, or None when it has one (`exporter` says which)."""
    from harness.model.backbone import DecoderLM
    if getattr(model, "fitted_by_counting", False):
        return "it is a count-based reference model (n-gram counts, not a network)"
    if not isinstance(model, DecoderLM):
        return f"it is not built on the shared backbone ({type(model).__name__})"
    return exporter(model)[0](model)


def shard_bytes(size: str) -> int:
    """--max-shard-size in bytes. The number, not the string, goes to save_pretrained: its reader
    (huggingface_hub's) knows no binary units, and would stop on 1GiB after the model has loaded."""
    match = SHARD_SIZE.fullmatch(size)
    if match is None:
        raise ConfigError(f"--max-shard-size {size!r} must be a whole number with a unit, e.g. {SHARD_EXAMPLES}")
    number, unit = int(match[1]), match[2].upper()
    if number <= 0:
        raise ConfigError(f"--max-shard-size {size!r} must be above zero, e.g. {SHARD_EXAMPLES}")
    if not unit:
        raise ConfigError(f"--max-shard-size {size!r} has no unit; add one, e.g. {number}MB (units: "
                          f"{', '.join(SHARD_UNIT_BYTES)})")
    if unit not in SHARD_UNITS:
        *most, last = SHARD_UNIT_BYTES
        raise ConfigError(f"--max-shard-size {size!r} has an unknown unit {match[2]!r}; use {', '.join(most)} "
                          f"or {last}")
    return number * SHARD_UNITS[unit]


def check_exportable(name: str, cfg) -> None:
    """Raise ExportError unless the model `name` at cfg exports (built on the meta device: no memory)."""
    from harness.model.build import build_model
    from harness.registry import models, unknown_hint
    try:
        why = (export_refusal(build_model(name, cfg.model, "meta")) if name in models()
               else f"it is not a registered model here ({unknown_hint('model')})")
    except ImportError as err:
        why = f"its layers cannot be built here ({err})"
    if why is not None:
        raise ExportError(f"{name} has no Hugging Face export: {why}; {ONLY}")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of the 256 byte values to printable characters, the alphabet of `tokenizers`'
    ByteLevel pre-tokenizer."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def byte_level_tokenizer():
    """A `tokenizers` tokenizer with the ids of the harness's ByteTokenizer: the UTF-8 bytes as ids
    0-255, the end of a document as `<|endoftext|>` (256)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    alphabet = bytes_to_unicode()
    tok = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(BYTE_EOS, special=True, normalized=False)])
    return tok


def write_tokenizer(name: str, folder: Path, log: Callable[[str], None]) -> None:
    """tokenizer.json and tokenizer_config.json of the run's tokenizer (see the module docstring); a
    warning where the exported tokenizer still encodes some text otherwise than the harness's."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    tok = get_tokenizer(name)
    if isinstance(tok, ByteTokenizer):
        raw, eos = byte_level_tokenizer(), BYTE_EOS
    else:
        spec = json.loads(tok._tok.to_str())
        spec["post_processor"] = None
        raw = Tokenizer.from_str(json.dumps(spec))
        eos = raw.id_to_token(tok.eos_id)
    # transformers registers eos as a special token and finds it inside text, unless it splits special tokens
    split = tok.encode(eos) != [tok.eos_id]
    exported = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=eos, split_special_tokens=split)
    exported.save_pretrained(str(folder))
    differing = added_tokens_encoded_otherwise(tok, folder)
    if differing:
        log(f"warning: the exported tokenizer encodes text holding {', '.join(differing)} with other ids than the "
            f"harness's {name} tokenizer (transformers finds all of its special tokens inside text or none); the "
            f"exported model sees other ids for such text")


def added_tokens_encoded_otherwise(tok, folder: Path) -> list[str]:
    """The added tokens (special ones among them) of the tokenizer saved in `folder` whose string, inside
    text, it encodes with other ids than `tok`: split_special_tokens is one switch for all special tokens,
    and a run's tokenizer.json may find some of them in text and not others. Loaded as AutoTokenizer
    builds it (tokenizer_config.json's class), without AutoTokenizer's question about the model's code
    when the folder holds it."""
    from transformers import PreTrainedTokenizerFast
    exported = PreTrainedTokenizerFast.from_pretrained(str(folder))
    probes = {token: f"a {token}b{token}" for token in exported.added_tokens_encoder}
    return [token for token, text in probes.items() if exported(text)["input_ids"] != tok.encode(text)]


def checkpoint_commit(ckpt: Path, meta: dict) -> str:
    """The harness commit that wrote the checkpoint: meta's, else the last header of the run's
    training log beside it (checkpoints written before meta held it)."""
    if meta.get("commit"):
        return meta["commit"]
    log = ckpt.parent / "train_log.jsonl"
    headers = [json.loads(line) for line in log.read_text().splitlines() if '"step"' not in line] if log.is_file() else []
    return headers[-1].get("commit", "not recorded") if headers else "not recorded"


def checkpoint_rows(ckpt: Path, rows_files: list[Path]) -> tuple[list[Row], list[Path]]:
    """The evaluation rows of this checkpoint (rows whose `checkpoint` is this folder) in the given
    rows files, or by default in `results/<run>/rows.jsonl` (the layout of `harness run` and
    `harness eval --run`, for a checkpoint at runs/<run>/<model>/checkpoint) and in a rows.jsonl
    in the run folder beside the checkpoint; also the files that were read."""
    if rows_files:
        missing = [p for p in rows_files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"rows file {missing[0]} not found; pass a rows.jsonl that `harness run` or "
                                    f"`harness eval` wrote, or leave out --rows")
        found, read = rows_files, given_rows
    else:
        found, read = [p for p in (Path("results") / ckpt.resolve().parent.parent.name / "rows.jsonl",
                                   ckpt.parent / "rows.jsonl") if p.is_file()], read_rows
    rows = [r for path in found for r in read(path)
            if r.checkpoint and Path(r.checkpoint).resolve() == ckpt.resolve()]
    return rows, found


def rows_of_weights(rows: list[Row], weights: str | None, log: Callable[[str], None]) -> list[Row]:
    """The rows scored on `weights` (the checkpoint's digest), and a warning for any left out: a
    checkpoint folder outlives its weights (a --no-resume retrain writes new ones there), so a row of
    this path that names another digest scored another model. Rows written before rows named their
    weights keep the path match, as in the evaluation loop's reuse of rows."""
    from harness.results.store import WEIGHTS_KEY
    kept = [r for r in rows if WEIGHTS_KEY not in r.extra or r.extra[WEIGHTS_KEY] == weights]
    if len(kept) < len(rows):
        log(f"warning: left {len(rows) - len(kept)} evaluation rows out of the model card: scored on other weights "
            f"of this checkpoint path (retrained since); run harness eval again to score these weights")
    return kept


def given_rows(path: Path) -> list[Row]:
    """The rows of a file given as --rows: one that holds none (a CSV, a table, a checkpoint's
    weights) is an error, not a model card that says no evaluation was found."""
    try:
        return read_given_rows(path, flag="--rows ", fix="pass a rows.jsonl that `harness run` or `harness eval` "
                                                          "wrote, or leave out --rows")
    except ResultsError as err:
        raise ExportError(str(err)) from None


def corpus_line(corpus: str) -> str:
    if corpus == "bundled":
        return ("`bundled`: the first 22 articles of the WikiText-2 (v1) validation split that ship with "
                "swat-harness (CC BY-SA 3.0)")
    if corpus in HUB_CORPORA:
        path, config, _ = HUB_CORPORA[corpus]
        return f"`{corpus}`: the Hugging Face dataset `{path}`" + (f" ({config})" if config else "")
    return f"`{corpus}`"


def model_card(name: str, cfg, meta: dict, built: HFExport, model, commit: str, rows: list[Row],
               rows_read: list[Path], where: str) -> str:
    """README.md of the exported folder: what was trained on what, how, and how it scored; `model` is the
    harness model (its parameter count, its blocks' MLP or none)."""
    from harness.model.backbone import count_params
    from harness.registry import get_model
    m, t, config = cfg.model, cfg.train, built.model.config
    mlp = model.blocks[0].mlp
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             f"tags: [swat-harness, {name}]"]
    if t.corpus in HUB_CORPORA:
        front.append(f"datasets: [{HUB_CORPORA[t.corpus][0]}]")
    front.append("---")
    model_rows = [("harness model", f"`{name}`: {get_model(name).description}"),
                  ("parameters", f"{count_params(model):,}"),
                  ("preset", cfg.preset), ("layers", m.num_layers), ("hidden size", config.hidden_size),
                  ("MLP (SwiGLU) hidden size", "none" if mlp is None else mlp.down.in_features), *built.card_rows,
                  ("vocabulary", f"{config.vocab_size} (tokenizer `{t.tokenizer}`)"),
                  ("tied embeddings", "yes" if config.tie_word_embeddings else "no"),
                  ("training length", f"{m.max_seq_len} tokens")]
    tokens = meta.get("tokens")
    recipe = [("corpus", corpus_line(t.corpus)), ("tokens trained", f"{tokens:,}" if tokens else "not recorded"),
              ("steps", _steps(meta, t)),
              ("batch", f"{t.batch_tokens:,} tokens ({t.batch_tokens // t.seq_len} sequences of {t.seq_len})"),
              ("optimizer", f"AdamW, betas {tuple(t.betas)}, weight decay {t.weight_decay:g}, grad clip {t.grad_clip:g}"),
              ("learning rate", f"{t.lr:g}, linear warmup over {t.warmup_tokens:,} tokens, cosine decay to "
                                f"{t.min_lr_ratio:g} x peak"),
              ("precision", "bf16 autocast on GPU, fp32 weights" if t.dtype == "bf16" else "fp32"),
              ("seed", t.seed), ("devices", _devices(meta)),
              ("final training loss", _number(meta.get("train_loss"))),
              ("held-out loss", _number(meta.get("heldout_loss"))), ("swat-harness commit", f"`{commit}`")]
    lines = [*front, "", f"# {name} ({cfg.preset}), trained with swat-harness", "",
             "Exported by `harness export` from a checkpoint of swat-harness, a benchmark harness for "
             "efficient language-model architectures.", "",
             "## Model", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in model_rows), "",
             "## Training", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in recipe), "",
             "## Evaluation", ""]
    if rows:
        lines += ["| task | metric | value | stderr | n | limit |", "|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r.task, r.metric, str(r.extra.get("context_length", "")))):
            lines.append(f"| {r.task} | {r.metric} | {_number(r.value)} | {_number(r.stderr)} | "
                         f"{r.n if r.n is not None else ''} | {r.extra.get('limit') or ''} |")
        lines += ["", f"Rows of this checkpoint in {', '.join(f'`{p}`' for p in rows_read)}."]
    else:
        looked = ", ".join(f"`{p}`" for p in rows_read) if rows_read else "no rows file"
        lines.append(f"No evaluation rows of this checkpoint ({looked}).")
    lines += ["", "## Use", "", "```python", f"from transformers import {built.loader}, AutoTokenizer", "",
              f"model = {built.load_call(where)}",
              # the same flag: where config.json names remote code, transformers asks about it for the tokenizer too
              f"tokenizer = AutoTokenizer.from_pretrained({where!r}{', trust_remote_code=True' * built.remote_code})",
              'ids = tokenizer("The meaning of", return_tensors="pt").input_ids',
              "print(tokenizer.decode(model.generate(ids, max_new_tokens=20, do_sample=False)[0]))", "```", "",
              built.card_note + "The tokenizer adds no BOS token, as in training, where documents are separated by "
              f"`{_eos_text(t.tokenizer)}`.", ""]
    return "\n".join(lines)


def _steps(meta: dict, train) -> str:
    if not meta.get("step"):
        return "not recorded"
    if meta["step"] < train.steps:
        return f"{meta['step']:,} of the {train.steps:,} planned (training stopped before its end)"
    return f"{meta['step']:,}"


def _devices(meta: dict) -> str:
    world = meta.get("world_size", 1)
    return "one process" if world == 1 else f"{world} ranks ({meta.get('parallel')})"


def _eos_text(tokenizer: str) -> str:
    tok = get_tokenizer(tokenizer)
    return BYTE_EOS if isinstance(tok, ByteTokenizer) else tok._tok.id_to_token(tok.eos_id)


def _number(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def hub_call(repo: str, call: Callable[[], object]):
    """call() against the hub, any failure of which (no network, no token, a refused token or
    repo) is one ExportError naming the repo and the way round it."""
    try:
        return call()
    except Exception as err:
        cause = first_line(err) or type(err).__name__
        raise ExportError(f"cannot push to the Hugging Face hub repo {repo} ({cause}); export without "
                          f"--push-to-hub and upload the folder later (`hf upload {repo} HF_DIR`)") from None


def writable_out(ckpt: Path, out: Path) -> Path:
    """--out resolved (`--out .` names no folder to put the temporary sibling beside), refused where it
    is the checkpoint or a folder holding it (its run folder, with the training log): the export
    replaces the whole folder at --out, and the checkpoint would go with it; or where it is inside
    the checkpoint, which training replaces whole at its next save."""
    target, source = out.resolve(), ckpt.resolve()
    if target == source or target in source.parents:
        what = "is the checkpoint" if target == source else f"holds the checkpoint {ckpt}"
        raise ExportError(f"--out {out} {what}, and the export replaces the folder at --out: it would delete the "
                          f"checkpoint; give another --out, e.g. {ckpt.parent / 'hf'}")
    if source in target.parents:
        raise ExportError(f"--out {out} is inside the checkpoint {ckpt}, which its next save replaces whole: the "
                          f"export would go with it; give another --out, e.g. {ckpt.parent / 'hf'}")
    return target


def temporary_folder(out: Path, target: Path) -> Path:
    """The temporary sibling of --out that the export writes into, made and removed once before the
    model is loaded: a --out that cannot be written (under /proc, on a read-only disk) is then one line
    naming --out and its folder, not the temporary folder's name (the user never gave it) after the
    loading. A file in the way is left to the command line, which names that file."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for left in _left_by_dead_exports(target):
        shutil.rmtree(left, ignore_errors=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except (FileExistsError, NotADirectoryError):
        raise
    except OSError as err:
        raise ExportError(f"--out {out} cannot be written: no folder can be made in {target.parent} "
                          f"({(err.strerror or type(err).__name__).lower()}); give another --out") from None
    tmp.rmdir()
    return tmp


def _left_by_dead_exports(target: Path) -> list[Path]:
    """The temporary and set-aside siblings of --out (`.NAME.tmpPID`, `.NAME.oldPID`) whose export
    process is gone (killed outright): a whole model's weights each, which nothing else removes."""
    left = []
    for path in target.parent.glob(f".{target.name}.*"):
        found = re.fullmatch(rf"\.{re.escape(target.name)}\.(?:tmp|old)(\d+)", path.name)
        if found and not _alive(int(found.group(1))):
            left.append(path)
    return left


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def unfinished_warning(ckpt: Path, meta: dict, cfg) -> str | None:
    """A warning line for a checkpoint whose training stopped before its last step (interrupted, or
    saved on the way): its weights are not the trained model its recipe describes."""
    if meta.get("step") is None or meta["step"] >= cfg.train.steps:
        return None
    return (f"warning: {ckpt} is at step {meta['step']:,} of the {cfg.train.steps:,} its run was planned for "
            f"(training stopped before its end), and the model card says so; run the same `harness train` again "
            f"to finish it, then export")


def export(checkpoint: Path, out: Path, max_shard_size: str = "2GB", push_to_hub: str | None = None,
           rows: list[Path] = (), force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Write the checkpoint folder `checkpoint` as a Hugging Face model folder at `out`, and log how to load it."""
    from harness.training.checkpoint import (
        WEIGHTS_FILE,
        load_checkpoint,
        no_space,
        read_meta,
        require_checkpoint,
        weights_digest,
    )
    if importlib.util.find_spec("transformers") is None:  # before any work; the folder is transformers' format
        raise MissingExtraError("harness export needs transformers: pip install 'swat-harness[hf]' "
                                "(in a clone: pip install -e '.[hf]')")
    ckpt, out = Path(checkpoint), Path(out)
    require_checkpoint(ckpt)
    target = writable_out(ckpt, out)
    meta = read_meta(ckpt)
    check_exportable(meta["model"], Config.from_dict(meta["config"]))
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty; pass --force to replace it, or another --out")
    shard_size = shard_bytes(max_shard_size)
    if push_to_hub:  # before any work: the hub must be reachable and the user logged in
        from huggingface_hub import HfApi
        hub = HfApi()
        hub_call(push_to_hub, hub.whoami)
    found_rows, rows_read = checkpoint_rows(ckpt, [Path(p) for p in rows])
    found_rows = rows_of_weights(found_rows, weights_digest(meta, ckpt / WEIGHTS_FILE), log)
    tmp = temporary_folder(out, target)
    model, cfg, name, meta = load_checkpoint(ckpt, "cpu", to_run=False)  # fla's models build, not run, here
    if unfinished := unfinished_warning(ckpt, meta, cfg):
        log(unfinished)
    eos_id = get_tokenizer(cfg.train.tokenizer).eos_id
    built = exporter(model)[1](model, cfg, eos_id)
    for key, value in run_record(name, cfg, meta).items():
        setattr(built.model.config, key, value)
    built.model.generation_config.pad_token_id = eos_id  # what generate pads finished rows with

    try:
        with no_transformers_bars():  # save_pretrained's bar over a handful of shards is noise here
            built.model.save_pretrained(str(tmp), max_shard_size=shard_size)
        for weights in tmp.glob("*.safetensors"):  # safetensors writes them 0600, unlike the folder's other files
            share_like_any_file(weights)
        for code in built.code:
            shutil.copyfile(code, tmp / code.name)
        write_tokenizer(cfg.train.tokenizer, tmp, log)
        (tmp / "README.md").write_text(model_card(name, cfg, meta, built, model,
                                                  checkpoint_commit(ckpt, meta), found_rows, rows_read,
                                                  push_to_hub or str(out)))
        if push_to_hub:
            hub_call(push_to_hub, lambda: hub.create_repo(push_to_hub, exist_ok=True))
            hub_call(push_to_hub, lambda: hub.upload_folder(repo_id=push_to_hub, folder_path=str(tmp),
                                                            commit_message=f"harness export of {name}"))
            log(f"pushed to https://huggingface.co/{push_to_hub}")
        if target.exists():
            old = target.with_name(f".{target.name}.old{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(target)
    except Exception as err:
        if full := no_space(err, out):
            raise full from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out}: load it with {built.load_call(str(out))}")
    return out
