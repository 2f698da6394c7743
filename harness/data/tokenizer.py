"""Tokenizers: UTF-8 bytes (no files; the tiny preset), or a `tokenizers` tokenizer.json from the
mirror (the Llama-2 32k BPE, a BPE trained on a corpus) or from a path.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from harness.data.paths import DataError, data_roots

# ---------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 bytes plus one end-of-document id (256): needs no files, used by the tiny preset."""
    name = "bytes"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A `tokenizers` tokenizer.json (or .json.gz), e.g. the Llama-2 32k BPE; no special tokens
    are added on encode."""

    def __init__(self, path: Path, name: str | None = None):
        from tokenizers import Tokenizer
        self.path = Path(path)
        self.name = name or str(path)
        if self.path.suffix == ".gz":
            self._tok = Tokenizer.from_str(gzip.decompress(self.path.read_bytes()).decode("utf-8"))
        else:
            self._tok = Tokenizer.from_file(str(path))
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


def get_tokenizer(name: str):
    """`bytes`, a tokenizer name in the mirror (`<root>/tokenizers/<name>/tokenizer.json[.gz]`, the
    roots searched in `data_roots()` order; `llama2` is committed in data/), or a path."""
    if name == "bytes":
        return ByteTokenizer()
    path = Path(name)
    if path.is_file():
        return HFTokenizer(path)
    candidates = [root / "tokenizers" / name / f for root in data_roots() for f in ("tokenizer.json", "tokenizer.json.gz")]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DataError(f"tokenizer {name!r} not found (looked for {candidates[0]} and the same under "
                        f"{', '.join(str(r) for r in data_roots()[1:])}); pass train.tokenizer=bytes or a path "
                        f"to a tokenizer.json, or run `harness data import PATH/llama-tokenizer-js`")
    return HFTokenizer(found, name)
