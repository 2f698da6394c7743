"""The package's layout: no import cycle between its modules (imports inside functions included, since
a lazy import hides a cycle rather than removing it), and the plugin paths a baseline uses."""

import ast
from pathlib import Path

import harness

PACKAGE = Path(harness.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The harness modules that `path` imports anywhere in its code (a name imported from a package
    counts as that submodule when there is one)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                out.add(child if child in modules else node.module)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path):] = 1, [node]
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_of_the_package_imports_itself_back():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    # a package imports its submodules only through them; the edge from a package to its own
    # __init__ (reading `harness.data` while importing `harness.data.mirror`) is not a dependency
    graph = {name: {m for m in imports_of(path, set(files)) if m != name and not name.startswith(m + ".")}
             for name, path in files.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle_through_lazy_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_plugin_paths_of_the_readme_import():
    from harness import register_model, register_task  # noqa: F401
    from harness.backbone import DecoderLM
    from harness.model.backbone import DecoderLM as defined
    assert DecoderLM is defined


def test_only_the_command_lines_import_the_command_lines():
    """harness.cli and harness.lm_eval_cli are entry points: the layers they drive must not lean on them."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    entry_points = {"harness.cli", "harness.lm_eval_cli", "harness.__main__"}
    leaning = {name: sorted(imports_of(path, entry_points)) for name, path in files.items() if name not in entry_points}
    assert {name: found for name, found in leaning.items() if found} == {}


def test_the_core_imports_no_task_or_baseline_module():
    """harness/ is what tasks/ and baselines/ build on: they register themselves (the registry imports
    them by name), and the core reads what they registered, never their modules."""
    leaning = {}
    for path in PACKAGE.rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            found |= {n for n in names if n.split(".")[0] in ("tasks", "baselines")}
        if found:
            leaning[module_name(path)] = sorted(found)
    assert leaning == {}


def test_the_packages_import_one_another_in_layers():
    """No cycle between the package's parts (its subpackages and top-level modules) either: each part
    builds on those below it, as README's layout lists them, and imports nothing back from above."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        needs = {part(m) for m in imports_of(path, set(files))}
        graph.setdefault(part(name), set()).update(needs - {part(name)})
    graph.pop("harness", None)  # the package's face: it hands names on
    graph = {name: needs - {"harness"} for name, needs in graph.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
