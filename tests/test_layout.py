"""The package's shape, as docs/architecture.md describes it: no import cycles, small files, Ray in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "platform" / "cryopick"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every cryopick module ``path`` imports, at module level or inside functions (lazy imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cryopick")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cryopick"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from cryopick.selftrain import stages`
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m and not m.startswith(i + ".")} for m, p in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of ``graph`` (module -> modules it imports), each as a path that returns to its start."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(_graph())
    assert not cycles, cycles[:3]


def test_the_cycle_check_finds_cycles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_file_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_ray_is_imported_only_in_the_distributed_layer_and_pipelines() -> None:
    pattern = re.compile(r"^\s*(import ray\b|from ray\b)", re.M)
    allowed = [PACKAGE / "distributed", REPO / "pipelines"]
    offenders = [str(p.relative_to(REPO)) for root in (PACKAGE, REPO / "dashboard", REPO / "benchmarks")
                 for p in root.rglob("*.py") if pattern.search(p.read_text()) and not any(a in p.parents for a in allowed)]
    assert not offenders, offenders
    inits = [str(p.relative_to(REPO)) for p in [*PACKAGE.rglob("*.py"), *(REPO / "pipelines").rglob("*.py"),
             *(REPO / "benchmarks").rglob("*.py")] if re.search(r"\bray\.init\(", p.read_text())]
    assert inits == ["platform/cryopick/distributed/connect.py"], inits  # one connect() for every caller


def test_readme_layout_table_matches_the_tree() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Layout"):]
    named = set(re.findall(r"`([\w./-]+/)`", table))
    for folder in named:
        assert (REPO / folder).is_dir() or (PACKAGE / folder).is_dir(), f"README names {folder}, which is not in the tree"
    folders = {f"{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    missing = folders - named
    assert not missing, f"package folders missing from the README layout table: {sorted(missing)}"
