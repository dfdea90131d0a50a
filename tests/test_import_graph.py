"""The package's import graph has no cycle: every module's imports, function-local ones included, point down.

Edges come from the source (AST), not from what Python happens to import first, so an import hidden
inside a function to dodge a circle counts as much as one at the top of the file. `from pkg import x`
is an edge to the module `pkg.x` when that is a module, else to `pkg` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "shortlvlm"


def modules() -> dict[str, Path]:
    """{dotted name: file} of every module of the package."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    edges = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target.startswith(PACKAGE) and target != name:
            edges.add(target)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def test_the_package_imports_form_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert find_cycle(graph) == expected


def test_function_local_imports_count(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from shortlvlm.plan import Plan\n    return Plan\n")
    known = {"shortlvlm.m": source, "shortlvlm.plan": source}
    assert imported("shortlvlm.m", source, known) == {"shortlvlm.plan"}


def test_the_calibration_passes_are_siblings():
    """The whole-model and layer-by-layer passes share `batch` and `hooks`; neither imports the other."""
    graph = import_graph()
    whole, layerwise = "shortlvlm.capture.whole_model", "shortlvlm.capture.layerwise"
    assert layerwise not in graph[whole] and whole not in graph[layerwise]
    assert {"shortlvlm.capture.hooks", "shortlvlm.capture.batch"} <= graph[whole] | graph[layerwise]
    assert {whole, layerwise} <= graph["shortlvlm.capture.dispatch"]


def test_algorithms_import_no_job_cli_or_checkpoint_writer():
    """The method's modules sit below io's load/save/verify, the jobs and the CLI."""
    graph = import_graph()
    algorithms = [name for name in graph if name.split(".")[1:2] and name.split(".")[1] in
                  {"capture", "scoring", "importance", "compensation", "surgery", "models"}]
    above = ("shortlvlm.jobs", "shortlvlm.cli", "shortlvlm.io.load", "shortlvlm.io.save", "shortlvlm.io.verify",
             "shortlvlm.resume")
    for name in algorithms:
        assert not [t for t in graph[name] if t.startswith(above)], name


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others (function-local imports included)."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_reachable_follows_imports_through_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert reachable(graph, "a") == {"b", "c"} and reachable(graph, "c") == set()


TRAINERS = ("shortlvlm.testbeds.toy.train", "shortlvlm.testbeds.smol.train")


def test_the_runtime_imports_no_training_code():
    """io, pruning, scoring and compensation (and everything they import, however deep) never reach a test
    bed's trainer: loading or pruning a model does not need the code that trained the toys."""
    graph = import_graph()
    assert set(TRAINERS) <= set(graph)  # the trainers are where this test looks for them
    runtime = [name for name in graph if name.startswith(("shortlvlm.io", "shortlvlm.pruning", "shortlvlm.scoring",
                                                          "shortlvlm.compensation"))]
    assert len(runtime) > 20
    for name in runtime:
        assert not reachable(graph, name) & set(TRAINERS), name
    # Only the test beds themselves (one trainer builds on the other's recipe) import a trainer.
    importers = {name for name, targets in graph.items() if targets & set(TRAINERS)}
    assert importers <= {*TRAINERS, "shortlvlm.testbeds.smol.train"}, importers


def test_the_cli_and_jobs_import_no_training_code():
    graph = import_graph()
    for name in [n for n in graph if n.startswith(("shortlvlm.cli", "shortlvlm.jobs"))] + ["shortlvlm"]:
        assert not reachable(graph, name) & set(TRAINERS), name
