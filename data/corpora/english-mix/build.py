"""Rebuild the `english-mix` pretraining corpus from its raw sources (see README.md beside this file).

Each source becomes one `<source>.jsonl.xz` of documents `{"text", "source", "id"}`, in a fixed
order, so a rebuild from the same inputs gives byte-identical files. Run from the repository root:

    python data/corpora/english-mix/build.py --gitenberg DIR... --peps DIR --rfcs DIR \
        --debian DIR    # where `dpkg -x` unpacked linux-doc-6.1, jargon-text, gnu-standards, dict-gcide,
                        # python3.11-doc, debian-handbook, debian-reference-en

A source whose argument is left out is not rewritten. At the end the corpus is recorded in
data/MANIFEST.json (per-file sha256, documents, Llama-2 token counts; tokenizes it once).

Repository arguments are git directories (bare or not) of snapshots; the commit read is HEAD.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

OUT = Path(__file__).resolve().parent
MIN_CHARS = 500  # shorter files are indexes and stubs, not prose


def git_files(repo: Path, pattern: str) -> list[tuple[str, bytes]]:
    """(path, content) of files at HEAD whose path matches `pattern`, sorted by path; blobs a
    snapshot left out (listed without content) are skipped."""
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "HEAD"],
                           check=True, capture_output=True, text=True).stdout.splitlines()
    out = []
    for name in sorted(n for n in names if re.search(pattern, n)):
        shown = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{name}"], capture_output=True)
        if shown.returncode == 0:
            out.append((name, shown.stdout))
    return out


def head_commit(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def gutenberg_text(raw: str) -> str:
    """The book between Project Gutenberg's START and END markers (header and license removed)."""
    text = raw.replace("\r\n", "\n")
    start = re.search(r"^\*\*\* ?START OF.*$|^\*END\*THE SMALL PRINT.*$", text, re.M)
    end = re.search(r"^\*\*\* ?END OF.*$|^End of (the )?Project Gutenberg.*$", text, re.M | re.I)
    lo = start.end() if start else 0
    hi = end.start() if end and end.start() > lo else len(text)
    return text[lo:hi].strip()


def gutenberg_docs(repos: list[Path]) -> list[dict]:
    """One document per book: the UTF-8 edition (`-0.txt`) if present, else the Latin-1 one
    (`-8.txt`), else the plain `.txt`."""
    docs = []
    for repo in sorted(repos, key=lambda r: r.name):
        files = dict(git_files(repo, r"^\d+(-[08])?\.txt$"))
        for suffix, encoding in (("-0.txt", "utf-8"), ("-8.txt", "latin-1"), (".txt", "latin-1")):
            name = next((n for n in files if n.endswith(suffix) and re.fullmatch(r"\d+" + re.escape(suffix), n)),
                        None)
            if name:
                text = gutenberg_text(files[name].decode(encoding, errors="replace"))
                if len(text) >= MIN_CHARS:
                    docs.append({"text": text, "source": "gitenberg",
                                 "id": f"{repo_name(repo)}@{head_commit(repo)[:12]}:{name}"})
                break
    return docs


def repo_name(repo: Path) -> str:
    """owner/name from a snapshot path like .../owner+name/repo(/.git)."""
    part = next(p for p in reversed(repo.parts) if "+" in p)
    return part.replace("+", "/", 1)


def repo_docs(repo: Path, pattern: str, source: str) -> list[dict]:
    commit = head_commit(repo)[:12]
    return [{"text": text, "source": source, "id": f"{repo_name(repo)}@{commit}:{name}"}
            for name, blob in git_files(repo, pattern)
            for text in [blob.decode("utf-8", errors="replace").replace("\r\n", "\n").strip()]
            if len(text) >= MIN_CHARS]


def debian_docs(root: Path) -> dict[str, list[dict]]:
    """Linux kernel documentation (English .rst, translations excluded), the Jargon File, the
    GNU coding/maintainer standards, GCIDE, the Python documentation and two Debian books, from
    `dpkg -x` folders of their Debian packages."""
    kernel = root.glob("**/usr/share/doc/linux-doc-*/Documentation/**/*.rst.gz")
    kernel_docs = []
    for path in sorted(kernel, key=lambda p: str(p)):
        rel = str(path).split("/Documentation/", 1)[1]
        if rel.startswith("translations/"):
            continue
        text = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace").strip()
        if len(text) >= MIN_CHARS:
            kernel_docs.append({"text": text, "source": "linux-doc", "id": f"linux-doc-6.1:Documentation/{rel}"})
    other = []
    for pattern, source in (("**/jargon-text/jargon.txt.gz", "jargon-file"),
                            ("**/gnu-standards/standards.text.gz", "gnu-standards"),
                            ("**/gnu-standards/maintain.text.gz", "gnu-standards")):
        for path in sorted(root.glob(pattern), key=lambda p: str(p)):
            text = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace").strip()
            other.append({"text": text, "source": source, "id": f"debian:{path.name}"})
    return {"linux-doc": kernel_docs, "debian-text": other, "gcide": gcide_docs(root),
            "python-docs": python_docs(root), "debian-books": debian_books(root)}


def python_docs(root: Path) -> list[dict]:
    """The Python 3.11 documentation (python3.11-doc), from the reStructuredText sources it ships."""
    docs = []
    found = root.glob("**/usr/share/doc/python3.*/html/_sources/**/*.rst.txt")
    for path in sorted({p.resolve() for p in found}, key=str):  # the package links one folder twice
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if len(text) >= MIN_CHARS:
            rel = str(path).split("/_sources/", 1)[1]
            docs.append({"text": text, "source": "python-docs", "id": f"python3.11-doc:{rel}"})
    return docs


class _HTMLText(HTMLParser):
    """Visible text of an HTML page: block elements become line breaks; scripts, styles and the
    navigation header/footer are skipped."""
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "table", "section"}
    SKIP = {"script", "style", "head"}

    def __init__(self):
        super().__init__()
        self.parts, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag in self.SKIP or (tag == "div" and ("navheader" in cls or "navfooter" in cls)) or self.skipping:
            self.skipping += tag not in ("br",)
            return
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.skipping:
            self.skipping -= tag not in ("br",)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)

    def text(self) -> str:
        joined = re.sub(r"[ \t]+", " ", "".join(self.parts))
        return re.sub(r"\n\s*\n\s*", "\n\n", joined).strip()


def html_text(raw: str) -> str:
    parser = _HTMLText()
    parser.feed(raw)
    return parser.text()


def debian_books(root: Path) -> list[dict]:
    """The Debian Administrator's Handbook (debian-handbook, en-US) and the Debian Reference
    (debian-reference-en): one document per HTML chapter, as visible text."""
    pages = sorted([*root.glob("**/usr/share/doc/debian-handbook/html/en-US/*.html"),
                    *root.glob("**/usr/share/debian-reference/*.en.html")], key=lambda p: str(p))
    docs = []
    for path in pages:
        text = html_text(path.read_text(encoding="utf-8", errors="replace"))
        if len(text) >= MIN_CHARS:
            book = "debian-handbook" if "debian-handbook" in str(path) else "debian-reference"
            docs.append({"text": text, "source": book, "id": f"{book}:{path.name}"})
    return docs


def gcide_docs(root: Path, chunk_chars: int = 16000) -> list[dict]:
    """The GNU Collaborative International Dictionary of English (dict-gcide): consecutive entries
    grouped into documents of about `chunk_chars`, split only between entries."""
    docs = []
    for path in sorted(root.glob("**/usr/share/dictd/gcide.dict.dz"), key=lambda p: str(p)):
        text = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        entries = [e.strip("\n") for e in re.split(r"\n\n(?=\S)", text)
                   if e.strip() and not e.lstrip().startswith("00-database")]
        chunk: list[str] = []
        for entry in entries + [None]:
            if entry is not None:
                chunk.append(entry)
            if chunk and (entry is None or sum(map(len, chunk)) >= chunk_chars):
                docs.append({"text": "\n\n".join(chunk), "source": "gcide",
                             "id": f"gcide:{len(docs)}:{chunk[0].split()[0]}"})
                chunk = []
    return docs


def write(name: str, docs: list[dict]) -> None:
    data = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    (OUT / f"{name}.jsonl.xz").write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    print(f"{name}: {len(docs)} documents, {len(data) / 1e6:.1f} MB of JSONL")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gitenberg", nargs="+", type=Path)
    ap.add_argument("--peps", type=Path)
    ap.add_argument("--rfcs", type=Path)
    ap.add_argument("--debian", type=Path)
    args = ap.parse_args()
    if args.gitenberg:
        write("gutenberg", gutenberg_docs(args.gitenberg))
    if args.peps:
        write("peps", repo_docs(args.peps, r"^peps/pep-\d+\.(rst|txt)$", "python-peps"))
    if args.rfcs:
        write("rust-rfcs", repo_docs(args.rfcs, r"^text/.*\.md$", "rust-rfcs"))
    if args.debian:
        for name, docs in debian_docs(args.debian).items():
            write(name, docs)
    from harness.data.importers import record_corpus
    entry = record_corpus(OUT.name, OUT.parent.parent)
    print(f"{OUT.name}: {entry['documents']} documents, tokens {entry['tokens']}")


if __name__ == "__main__":
    main()
