"""`harness data list|fetch|verify|import|train-tokenizer`: the mirror from the command line."""

from __future__ import annotations

import os
from pathlib import Path

from rich.markup import escape

from harness.data.corpus import HUB_CORPORA, corpus_files, corpus_names, corpus_origin, fetch_corpus
from harness.data.importers import fetch, import_path, store_bpe
from harness.data.mirror import (
    CATALOGUE,
    Status,
    corpus_sizes_differ,
    load_manifest,
    recorded,
    status,
    statuses,
    verify,
)
from harness.data.paths import (
    DataError,
    data_roots,
    harness_data_problem,
    user_data_dir,
)
from harness.data.tokenizer import get_tokenizer, mirror_candidates, tokenizer_origin
from harness.files import file_in_the_way


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _where(path: Path) -> str:
    """A path relative to the working directory when it is inside it (short table cells)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _dest(to: str | None) -> Path:
    """The mirror folder to write (--to, else `user_data_dir()`), refused before any work when a part
    of its path is a file (writing would fail after the input was read, or half-way)."""
    dest = Path(to) if to else user_data_dir()
    blocking = file_in_the_way(dest)
    if blocking is not None:
        raise DataError(f"cannot write the mirror to {dest}: {blocking} is a file, not a folder; pass --to "
                        f"a folder (or set HARNESS_DATA to one)")
    return dest


def needed_datasets() -> dict[str, list[str]]:
    """{dataset: the tasks that read it} over every registered task (`register_task(datasets=...)`)."""
    from harness.registry import tasks
    out: dict[str, list[str]] = {}
    for name, spec in tasks().items():
        for ds in spec.datasets:
            out.setdefault(ds, []).append(name)
    return out


def _split_flag(st: Status) -> str:
    """A stored split's status cell: a damaged file (no count) is only flagged, verify says why at length."""
    if st.count is None:
        return "[red]damaged (see harness data verify)[/red]"
    return f"[yellow]{escape(st.problem)}[/yellow]" if st.problem else "[green]ok[/green]"


def cmd_list(console) -> None:
    """Every dataset the registered tasks read (the tasks, present or missing, count vs official,
    size, checksum, path), then the tokenizers and the corpora."""
    from rich.table import Table

    from harness.terminal import print_table
    manifest = load_manifest()
    problem = harness_data_problem()
    if problem:  # a warning only: `list` is also how one sees what a mirror about to be made needs
        console.print(f"warning: {problem}, so every item below is missing; set it to your mirror folder (fetch "
                      f"and import make it), or unset it to read the repository's data/", markup=False, highlight=False)
    console.print("lookup order: " + " > ".join(_where(r) for r in data_roots()), highlight=False)
    table = Table(title="evaluation sets the tasks read")
    for col in ("dataset", "split", "status", "n", "official", "size", "sha256", "where"):
        table.add_column(col)
    missing = []
    for name, readers in needed_datasets().items():
        ds = CATALOGUE.get(name)
        label = name if readers == [name] else f"{name} (read by {', '.join(readers)})"
        if ds is None:  # a plugin's dataset the catalogue cannot fetch or check
            table.add_row(label, "-", "[yellow]not in the catalogue[/yellow]", *["-"] * 5)
            continue
        for split in ds.splits:
            st = status(name, split)
            if st.path is None:
                missing.append(name)
                table.add_row(label, split, "[red]missing[/red]", "-", str(st.official), "-", "-",
                              f"hub {ds.hub}" + (f" {ds.hub_config}" if ds.hub_config else ""))
                continue
            table.add_row(label, split, _split_flag(st), "-" if st.count is None else str(st.count), str(st.official),
                          _size(st.path.stat().st_size), (st.sha256 or "-")[:8], _where(st.path))
    print_table(table, console, ("sha256", "official", "size", "n"))
    if missing:
        console.print(f"missing: {', '.join(dict.fromkeys(missing))}; get them with `harness data fetch NAME` "
                      f"(online) or `harness data import FILE --name NAME [--split SPLIT]`", highlight=False)
    other = Table(title="tokenizers and pretraining corpora")
    for col in ("name", "status", "documents", "tokens (llama2)", "size", "where"):
        other.add_column(col)
    # what data/MANIFEST.json records, then what only a lookup root's manifest does (an import there)
    found = {name: entry for name, _, entry, _ in recorded("tokenizers")}
    for name, entry in {**manifest.get("tokenizers", {}), **found}.items():
        try:
            tok = get_tokenizer(name)
            other.add_row(f"tokenizer {name}", "[green]ok[/green]", f"vocab {tok.vocab_size}", "-",
                          _size(tok.path.stat().st_size), _where(tok.path))
        except DataError:
            damaged = next((c for c in mirror_candidates(name) if c.is_file()), None)
            other.add_row(f"tokenizer {name}", f"[red]{'cannot be loaded' if damaged else 'missing'}[/red]",
                          f"vocab {entry['vocab_size']}", "-", "-",
                          _where(damaged) if damaged else escape(tokenizer_origin(entry)))
    corpora = {name: (folder, entry) for name, folder, entry, _ in recorded("corpora")}
    found_corpora = [name for name in corpus_names() if name != "bundled"]  # also folders no manifest records
    for name in dict.fromkeys([*manifest.get("corpora", {}), *corpora, *found_corpora, *HUB_CORPORA]):
        folder, entry = corpora.get(name, (None, manifest.get("corpora", {}).get(name, {})))
        try:
            files = corpus_files(name)
        except DataError:
            files = []
        tokens = entry.get("tokens", {}).get("llama2")
        state = "[red]missing[/red]" if not files else \
            "[yellow]differs from its manifest: harness data verify[/yellow]" \
            if folder is not None and corpus_sizes_differ(folder, entry) else \
            "[green]ok[/green]"
        other.add_row(f"corpus {name}", state,
                      f"{entry['documents']:,}" if entry else "-", f"{sum(tokens.values()):,}" if tokens else "-",
                      _size(sum(f.stat().st_size for f in files)) if files else "-",
                      _where(files[0].parent) if files else escape(corpus_origin(name) or
                      f"no harness command makes it: put its files in corpora/{name}/ of a data root"))
    print_table(other, console, ("tokens (llama2)", "size", "documents"))


def cmd_verify(console) -> None:
    """Every problem of the mirror, one line each, then one error line (exit 2) when there are any.
    A $HARNESS_DATA that is no folder is an error too: `ok` would say a mirror that is not there passed."""
    problem = harness_data_problem()
    if problem:
        raise DataError(f"{problem}: there is no mirror to verify; set it to your mirror folder, or unset it to "
                        f"verify the repository's data/ and the user cache")
    problems = verify()
    for p in problems:
        console.print(f"[red]x[/red] {escape(p)}", highlight=False)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the mirror (see above); replace those files as each line says")
    present = sum(1 for st in statuses() if st.path)
    console.print(f"ok: {present} splits match the official counts and their MANIFEST.json; tokenizers and "
                  f"corpora match their MANIFEST.json", highlight=False)


def cmd_fetch(args, console) -> None:
    """Every name and option is checked, and the hub reached once, before anything is fetched."""
    unknown = [n for n in args.names if n not in CATALOGUE and n not in HUB_CORPORA]
    if unknown:
        raise DataError(f"unknown name(s) {', '.join(unknown)}: choose datasets of {', '.join(CATALOGUE)} or hub "
                        f"corpora of {', '.join(HUB_CORPORA)}")
    corpora = [n for n in args.names if n in HUB_CORPORA]
    if corpora and not args.documents:
        raise DataError(f"fetching corpus {corpora[0]} needs --documents N (how many to stream)")
    if args.documents and len(corpora) < len(args.names):
        raise DataError(f"--documents applies to hub corpora only ({', '.join(HUB_CORPORA)}); evaluation sets are "
                        f"fetched whole: fetch {', '.join(n for n in args.names if n not in HUB_CORPORA)} "
                        f"without it")
    dest = _dest(args.to)
    check_hub_reachable()
    for name in args.names:
        if name in HUB_CORPORA:
            folder = fetch_corpus(name, args.documents, dest,
                                  progress=lambda d, n, name=name: console.print(f"{name}: {d:,}/{n:,} documents"))
            console.print(f"{name}: {folder}")
            continue
        for e in fetch(name, dest, args.force):
            console.print(f"{name}/{e['split']}: {e['count']} examples -> {dest / e['file']}")


def check_hub_reachable(timeout: float = 10) -> None:
    """One quick request to the hub before fetching: offline, the hub client would retry each file
    for about half a minute and print every retry before failing."""
    import urllib.error
    import urllib.request
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as err:  # URLError, a timeout, a malformed HF_ENDPOINT
        reason = getattr(err, "reason", None) or err
        raise DataError(f"the Hugging Face hub ({endpoint}) is not reachable from here ({reason}); fetch where it "
                        f"is, or use `harness data import` with local files") from None


def run_command(args, console) -> None:
    """`harness data list|fetch|verify|import|train-tokenizer` (argparse namespace from harness.cli)."""
    if args.data_command == "list":
        from harness.registry import load_plugins
        load_plugins(args.plugin)  # a plugin's tasks declare the datasets they read
        cmd_list(console)
    elif args.data_command == "verify":
        cmd_verify(console)
    elif args.data_command == "fetch":
        cmd_fetch(args, console)
    elif args.data_command == "train-tokenizer":
        dest = _dest(args.to)
        e = store_bpe(args.corpus, args.vocab_size, args.name, dest, args.force)
        if e["vocab_size"] < args.vocab_size:
            console.print(f"warning: the vocabulary reached {e['vocab_size']}, not the {args.vocab_size} asked: the "
                          f"training documents of corpus {args.corpus} hold no more pairs seen twice; a larger corpus "
                          f"gives more", markup=False, highlight=False)
        console.print(f"tokenizer {e['name']}: vocabulary {e['vocab_size']} -> {dest / e['file']}; use it with "
                      f"--set train.tokenizer={e['name']} --set model.vocab_size={e['vocab_size']}", highlight=False)
    elif args.data_command == "import":
        dest = _dest(args.to)
        for e in import_path(Path(args.path), dest, args.name, args.split, args.force):
            what = f"{e['name']}/{e['split']}: {e['count']} examples (official {e['official']})" if "split" in e \
                else f"tokenizer {e['name']}: vocabulary {e['vocab_size']}"
            console.print(f"{what} -> {dest / e['file']}")
