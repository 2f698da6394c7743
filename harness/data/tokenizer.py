"""Tokenizers: UTF-8 bytes (no files; the tiny preset), or a `tokenizers` tokenizer.json from the
mirror (the Llama-2 32k BPE, a BPE trained on a corpus) or from a path.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

from harness.data.paths import DataError, data_roots

# ---------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 bytes plus one end-of-document id (256): needs no files, used by the tiny preset."""
    name = "bytes"
    vocab_size = 257
    eos_id = 256
    fingerprint = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A `tokenizers` tokenizer.json (or .json.gz), e.g. the Llama-2 32k BPE; no special tokens
    are added on encode. `fingerprint` is the sha256 of its JSON (as MANIFEST.json records it): a
    name or path says nothing about the ids, since one retrained under the same name (--force)
    encodes differently."""

    def __init__(self, path: Path, name: str | None = None):
        from tokenizers import Tokenizer
        self.path = Path(path)
        self.name = name or str(path)
        try:
            data = self.path.read_bytes()
            data = gzip.decompress(data) if self.path.suffix == ".gz" else data
            self._tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as err:  # `tokenizers` raises a bare Exception for a file it cannot parse
            reason = str(err).partition("\n")[0]
            raise DataError(f"tokenizer {path} cannot be loaded ({type(err).__name__}: {reason}); "
                            f"pass a tokenizer.json saved by `tokenizers` (or gzipped, .json.gz), or "
                            f"train.tokenizer=bytes") from None
        self.fingerprint = hashlib.sha256(data).hexdigest()
        self.vocab_size = self._tok.get_vocab_size()
        eos = next((t for t in ("</s>", "<|endoftext|>", "<eos>") if self._tok.token_to_id(t) is not None), None)
        if eos is None:
            raise DataError(f"tokenizer {path} has no end-of-document token (</s> or <|endoftext|>)")
        self.eos_id = self._tok.token_to_id(eos)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encodes on all cores (the `tokenizers` thread pool); same ids as `encode` one by one."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids))


def mirror_candidates(name: str) -> list[Path]:
    """Where a tokenizer name is looked for in the mirror, first match wins: each root of
    `data_roots()` in order, `tokenizers/<name>/tokenizer.json` before `tokenizer.json.gz`."""
    return [root / "tokenizers" / name / f for root in data_roots() for f in ("tokenizer.json", "tokenizer.json.gz")]


def tokenizer_command(entry: dict) -> str | None:
    """The command that makes a tokenizer recorded in a manifest, read from its `origin`: a trained
    BPE's ends with the train-tokenizer command that made it (`store_bpe`), the Llama-2 one is rebuilt
    from llama-tokenizer-js (`import_tokenizer`); None for any other."""
    origin = entry.get("origin", "")
    trained = re.search(r"harness data train-tokenizer .*", origin)
    if trained:
        return trained.group()
    return "harness data import PATH/llama-tokenizer-js" if "llama-tokenizer-js" in origin else None


def tokenizer_origin(entry: dict) -> str:
    """How a tokenizer recorded in a manifest is made: its command, else its origin as recorded."""
    return tokenizer_command(entry) or f"no harness command makes it; origin: {entry.get('origin') or 'not recorded'}"


def get_tokenizer(name: str):
    """`bytes`, a tokenizer name in the mirror (`mirror_candidates`; `llama2` is committed in
    data/), or a path."""
    if name == ByteTokenizer.name:
        return ByteTokenizer()
    path = Path(name)
    if path.is_file():
        return HFTokenizer(path)
    candidates = mirror_candidates(name)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        from harness.data.mirror import load_manifest
        entry = load_manifest().get("tokenizers", {}).get(name)
        command = tokenizer_command(entry) if entry else None
        made = f"make it with `{command}`, or " if command else ""
        others = ", ".join(str(r) for r in data_roots()[1:])
        raise DataError(f"tokenizer {name!r} not found (looked for {candidates[0]}"
                        f"{f' and the same under {others}' if others else ''}); {made}pass train.tokenizer=bytes "
                        f"or a path to a tokenizer.json")
    return HFTokenizer(found, name)


def trained_tokenizer_path(name: str, dest: Path) -> Path:
    """Where a tokenizer trained as `name` goes in the mirror folder `dest`, refused before training
    unless `get_tokenizer(name)` (train.tokenizer=NAME) will load that very file: not the built-in
    byte tokenizer's name, a plain folder name (which also needs no quoting in --set), no file of
    that name in the working directory, and no tokenizer of that name found before it."""
    if name == ByteTokenizer.name:
        raise DataError(f"--name {name} is the built-in byte tokenizer's: train.tokenizer={name} never loads a "
                        f"trained one; choose another name, e.g. --name bpe8k")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise DataError(f"--name {name!r}: a tokenizer name is a folder under tokenizers/ and a train.tokenizer "
                        f"value: letters, digits, '.', '_' or '-', not starting with '.', '_' or '-' (e.g. bpe8k)")
    if Path(name).is_file():
        raise DataError(f"--name {name}: the file {Path(name).resolve()} would be loaded by train.tokenizer={name} "
                        f"instead of the trained tokenizer; choose another name")
    target = dest / "tokenizers" / name / "tokenizer.json.gz"
    first = next((c for c in mirror_candidates(name) if c.resolve() == target.resolve() or c.is_file()), None)
    if first is None:
        raise DataError(f"train.tokenizer={name} would not find a tokenizer in {dest}: names are looked up in "
                        f"{', '.join(str(r) for r in data_roots())} only; omit --to, or set HARNESS_DATA={dest}")
    if first.resolve() != target.resolve():
        raise DataError(f"tokenizer {name} already exists as {first}, which train.tokenizer={name} would load "
                        f"instead of the trained one; choose another --name")
    return target
