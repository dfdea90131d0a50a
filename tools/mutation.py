"""Mutation testing of the core math: do the tests notice when the code is wrong?

    .venv/bin/python tools/mutation.py [--limit N] [--seed S] [--module importance] [--timeout SECONDS] [--list]
                                       [--jobs N] [--no-fork]

Each mutant is one small change to one module's syntax tree (a comparison flipped, + for -, all for
any, .sum() for .mean(), a 0 for a 1, a float64 cast dropped...), written into a temporary copy of
src/; the module's mapped tests then run against that copy (PYTHONPATH, `pytest -x -q -m "not slow"`,
one process per mutant, a timeout each). A failing or timed-out run kills the mutant; a passing
run lets it survive, which names a change the tests cannot see (or an equivalent program). The work
tree is never written: Ctrl-C (or SIGTERM) stops the running test process and deletes the copy.

A test run is a fork of this process, which imported torch, transformers and pytest once (never shortlvlm),
so a mutant costs its tests, not those imports (1.0 s against 5.0 s as a fresh `python -m pytest` on the same
mutants); the forked unmutated tests must pass first, and a forked run that neither passes nor fails (a crash,
a timeout) is run again as a subprocess, so only a plain test failure counts as a kill. `--no-fork` starts
every run as a subprocess; `--jobs N` tests N mutants at a time, each in its own copy of src/.

Only the tests that run the mutated statement are run (`--all-tests` runs the module's whole set):
the module's tests run once, unmutated, under coverage.py with one context per test function, and a
mutant gets the test functions whose context executed a line of its innermost statement. A
statement executed while the module was imported (a constant, a default argument, a decorator)
gets the whole set; a statement no test executes is reported "uncovered" and counts as surviving.
Every mutant that survives its selection is run again against the module's whole set
(`--no-confirm` skips that), so a test the selection missed still kills it, and the summary counts
such misses.

Prints each mutant's outcome, then killed/survived per module, the kill rate, the surviving mutants
(file:line, mutation) and the mean seconds per mutant (with the full sweep's estimate). Error
messages (f-strings, raise statements), type annotations and what progress bars are told (the
arguments of `progress_bar(...)` and `bar.update(...)`) are not mutated.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = Path("src/shortlvlm")

# module (relative to src/shortlvlm) -> the fast tests that should kill its mutants
TESTS: dict[str, list[str]] = {
    "importance.py": ["tests/test_importance.py", "tests/compensation/test_scp.py", "tests/scoring/test_tis_cosine.py"],
    "selection.py": ["tests/test_selection.py", "tests/test_pruning.py", "tests/test_plan.py"],
    "compensation/__init__.py": ["tests/compensation"],
    "compensation/runs.py": ["tests/compensation"],
    "compensation/scp.py": ["tests/compensation/test_scp.py", "tests/test_numerical_guards.py"],
    "compensation/lstsq.py": ["tests/compensation/test_lstsq.py"],
    "compensation/cosine.py": ["tests/compensation/test_cosine.py"],
    "compensation/magnitude.py": ["tests/compensation/test_magnitude.py"],
    "compensation/laco.py": ["tests/compensation/test_laco.py"],
    "scoring/__init__.py": ["tests/scoring/test_tis_cosine.py", "tests/scoring/test_loss.py"],
    "scoring/base.py": ["tests/scoring/test_tis_cosine.py", "tests/scoring/test_angular.py"],
    "scoring/trivial.py": ["tests/scoring/test_tis_cosine.py"],
    "scoring/loss.py": ["tests/scoring/test_loss.py", "tests/scoring/test_sleb.py", "tests/scoring/test_ppl.py"],
    **{f"scoring/{name}.py": [f"tests/scoring/test_{name}.py"]
       for name in ("angular", "block_influence", "ppl", "sleb", "taylor", "tis_cosine", "tis_loss")},
    "scoring/bridged.py": ["tests/scoring/test_tis_loss.py"],
}

COMPARISONS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
               ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
ARITHMETIC = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div}
BOOLEAN = {ast.And: ast.Or, ast.Or: ast.And}
SYMBOLS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
           ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
           ast.Div: "/", ast.FloorDiv: "//", ast.And: "and", ast.Or: "or"}
FUNCTIONS = {"all": "any", "any": "all", "min": "max", "max": "min"}  # builtins and methods alike
METHODS = {"sum": "mean", "mean": "sum", "nansum": "nanmean", "nanmean": "nansum"}  # x.sum() and torch.sum(x)


@dataclass(frozen=True)
class Mutant:
    module: str  # relative to src/shortlvlm
    site: int  # index among the module's mutation sites, in ast.walk order
    line: int
    column: int  # 1-based, of the mutated expression
    mutation: str

    def __str__(self) -> str:
        return f"{SRC / self.module}:{self.line}:{self.column}: {self.mutation}"


def _is_progress_call(func: ast.AST) -> bool:
    """`progress_bar(...)`, or `.update(...)` on a name ending in `bar` (`bar.update(1)`, `progress_bar.update`)."""
    if isinstance(func, ast.Name):
        return func.id == "progress_bar"
    return (isinstance(func, ast.Attribute) and func.attr == "update" and isinstance(func.value, ast.Name)
            and func.value.id.endswith("bar"))


def _skipped(tree: ast.Module) -> set[int]:
    """ids of nodes not to mutate: annotations, f-strings and raise statements (messages, not math), and the
    arguments of progress-bar calls (`progress_bar(total=...)`, `bar.update(n)`: what a bar shows, not a result)."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.JoinedStr, ast.Raise)):
            roots.append(node)
        elif isinstance(node, ast.Call) and _is_progress_call(node.func):
            roots.extend([*node.args, *(keyword.value for keyword in node.keywords)])
        elif isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            roots.append(node.returns)
    return {id(inner) for root in roots for inner in ast.walk(root)}


def _sites(tree: ast.Module) -> Iterator[tuple[ast.AST, str, object]]:
    """(node, description, how) for every mutation of the tree, in a fixed order; `how` is read by _apply."""
    skipped = _skipped(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Compare):
            for position, op in enumerate(node.ops):
                if type(op) in COMPARISONS:
                    yield node, f"{SYMBOLS[type(op)]} -> {SYMBOLS[COMPARISONS[type(op)]]}", ("compare", position)
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITHMETIC:
            augmented = "=" if isinstance(node, ast.AugAssign) else ""
            text = f"{SYMBOLS[type(node.op)]}{augmented} -> {SYMBOLS[ARITHMETIC[type(node.op)]]}{augmented}"
            yield node, text, ("arithmetic",)
        elif isinstance(node, ast.BoolOp):
            yield node, f"{SYMBOLS[type(node.op)]} -> {SYMBOLS[BOOLEAN[type(node.op)]]}", ("boolean",)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            yield node, f"drop unary {'not' if isinstance(node.op, ast.Not) else '-'}", ("unary",)
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in FUNCTIONS:
                yield node, f"{name}(...) -> {FUNCTIONS[name]}(...)", ("rename",)
            elif name in METHODS and isinstance(node.func, ast.Attribute):
                yield node, f".{name}() -> .{METHODS[name]}()", ("rename",)
            elif name == "double" and isinstance(node.func, ast.Attribute) and not node.args:
                yield node, "drop .double() (float64 cast)", ("drop_call",)
        elif isinstance(node, ast.Attribute) and node.attr == "float64":
            yield node, "float64 -> float32", ("float32",)
        elif (isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value in (0, 1)):
            yield node, f"constant {node.value!r} -> {type(node.value)(1 - node.value)!r}", ("constant",)


class _Replace(ast.NodeTransformer):
    """Replaces one node (by identity) with another."""

    def __init__(self, old: ast.AST, new: ast.AST):
        self.old, self.new = old, new

    def visit(self, node: ast.AST) -> ast.AST:
        return self.new if node is self.old else super().visit(node)


def _apply(tree: ast.Module, node: ast.AST, how: tuple) -> ast.Module:
    """The tree with the mutation `how` made at `node` (the tree is changed in place)."""
    kind = how[0]
    if kind == "compare":
        node.ops[how[1]] = COMPARISONS[type(node.ops[how[1]])]()
    elif kind == "arithmetic":
        node.op = ARITHMETIC[type(node.op)]()
    elif kind == "boolean":
        node.op = BOOLEAN[type(node.op)]()
    elif kind == "unary":
        tree = _Replace(node, node.operand).visit(tree)
    elif kind == "rename":
        table = {**FUNCTIONS, **METHODS}
        if isinstance(node.func, ast.Name):
            node.func.id = table[node.func.id]
        else:
            node.func.attr = table[node.func.attr]
    elif kind == "drop_call":
        tree = _Replace(node, node.func.value).visit(tree)
    elif kind == "float32":
        node.attr = "float32"
    elif kind == "constant":
        node.value = type(node.value)(1 - node.value)
    return ast.fix_missing_locations(tree)


def sites(source: str) -> list[tuple[int, int, str]]:
    """(line, column from 1, mutation) of every mutant of a module's source, in site order."""
    return [(node.lineno, node.col_offset + 1, text) for node, text, _ in _sites(ast.parse(source))]


def mutate(source: str, site: int) -> str:
    """The source with mutation `site` made (comments and layout are lost; the program is otherwise the same)."""
    tree = ast.parse(source)
    node, _, how = list(_sites(tree))[site]
    return ast.unparse(_apply(tree, node, how))


def mutants(module: str) -> list[Mutant]:
    """Every mutant of `module` (relative to src/shortlvlm)."""
    return [Mutant(module, site, line, column, text)
            for site, (line, column, text) in enumerate(sites((REPO / SRC / module).read_text()))]


def _test_env(copy: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1"}  # a stale .pyc of the same size and second would hide a mutant
    env.setdefault("SHORTLVLM_TEST_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow"]


class Subprocesses:
    """Each test run a fresh `python -m pytest` (imports torch and transformers every time)."""

    def start(self, copy: Path, tests: list[str], coverage_rc: Path | None = None) -> subprocess.Popen:
        runner = ["-m", "coverage", "run", f"--rcfile={coverage_rc}"] if coverage_rc is not None else []
        return subprocess.Popen([sys.executable, *runner, "-m", "pytest", *PYTEST_ARGS, *tests], cwd=REPO,
                                env=_test_env(copy), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def poll(self, handle: subprocess.Popen) -> int | None:
        return handle.poll()

    def kill(self, handle: subprocess.Popen) -> None:
        os.killpg(handle.pid, signal.SIGKILL)
        handle.wait()


# imported once by the parent under --fork, so a forked test run starts with them loaded; never shortlvlm
PRELOAD = ("numpy", "torch", "torch.nn.functional", "transformers", "pytest", "hypothesis", "PIL.Image",
           "safetensors.torch", "accelerate", "tqdm",
           *(f"transformers.models.{name}.modeling_{name}" for name in
             ("llava", "qwen2_vl", "qwen2_5_vl", "gemma3", "idefics3", "smolvlm", "internvl", "llama", "qwen2")))


class Forks:
    """Each test run a fork of this process, which imported torch, transformers and pytest once (PRELOAD) and
    never shortlvlm: the child puts the mutated copy first on sys.path and imports shortlvlm from it. A child
    that ends other than by its tests passing (0) or failing (1), or runs out of time, is not trusted: its
    mutant is run again as a subprocess (the caller does that), so a fork-only failure never counts as a kill."""

    def __init__(self):
        for name, value in (("SHORTLVLM_TEST_THREADS", "1"), ("OMP_NUM_THREADS", "1")):
            os.environ.setdefault(name, value)  # before torch is imported: its thread pool reads them
        import importlib

        for module in PRELOAD:  # an optional model family may be missing: the child imports what it needs
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        if any(name == "shortlvlm" or name.startswith("shortlvlm.") for name in sys.modules):
            raise SystemExit("--fork: shortlvlm was imported before forking; the children would not see mutants")

    def start(self, copy: Path, tests: list[str]) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 70
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.chdir(REPO)
            sys.path[:0] = [str(REPO), str(copy)]  # as `python -m pytest` with PYTHONPATH=copy
            sys.dont_write_bytecode = True
            os.environ.update(_test_env(copy))
            import pytest

            code = int(pytest.main([*PYTEST_ARGS, *tests]))
        finally:
            os._exit(code)

    def imported_from(self, copy: Path) -> str:
        """Where a forked child imports shortlvlm from, given the copy (it must be the copy)."""
        read, write = os.pipe()
        pid = os.fork()
        if not pid:
            try:
                os.close(read)
                sys.path[:0] = [str(REPO), str(copy)]
                import shortlvlm

                os.write(write, str(shortlvlm.__file__).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            found = pipe.read().decode()
        os.waitpid(pid, 0)
        return found

    def poll(self, handle: int) -> int | None:
        pid, status = os.waitpid(handle, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if pid else None

    def kill(self, handle: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle, signal.SIGKILL)
        os.waitpid(handle, 0)


def _outcome(code: int, tests: list[str]) -> str:
    if code == 5:
        raise SystemExit(f"no tests collected from {' '.join(tests)}")
    return "survived" if code == 0 else "killed"


def _run_tests(copy: Path, tests: list[str], timeout: float, coverage_rc: Path | None = None,
               runner: Subprocesses | Forks | None = None) -> tuple[str, float]:
    """("survived" | "killed" | "timeout", seconds) of the tests run against the copy of src/ (under coverage.py
    with `coverage_rc`; in a subprocess unless `runner` says otherwise)."""
    runner = runner or Subprocesses()
    started = time.perf_counter()
    handle = runner.start(copy, tests, coverage_rc) if coverage_rc is not None else runner.start(copy, tests)
    try:
        while (code := runner.poll(handle)) is None:
            if time.perf_counter() - started > timeout:
                runner.kill(handle)
                return "timeout", time.perf_counter() - started
            time.sleep(0.05)
    except BaseException:  # Ctrl-C: stop the test process before the copy is deleted
        runner.kill(handle)
        raise
    return _outcome(code, tests), time.perf_counter() - started


def _statement_lines(source: str, line: int) -> range:
    """The lines of the innermost statement holding `line` (a compound statement: its header only)."""
    best = None
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.stmt) and node.lineno <= line <= node.end_lineno:
            body = getattr(node, "body", None)
            end = body[0].lineno - 1 if isinstance(body, list) and body and not isinstance(node, ast.Expr) else None
            span = range(node.lineno, (end if end is not None and end >= node.lineno else node.end_lineno) + 1)
            if line in span and (best is None or len(span) < len(best)):
                best = span
    return best or range(line, line + 1)


def _test_files(tests: list[str]) -> list[Path]:
    """The test files under the given test paths (files or folders), relative to the repository."""
    found = []
    for test in tests:
        path = REPO / test
        found += [path] if path.is_file() else sorted(path.rglob("test_*.py"))
    return [f.relative_to(REPO) for f in found]


def _node_id(context: str, files: list[Path]) -> str | None:
    """coverage.py's test-function context ("test_loss.TestX.test_y", the module named as pytest imported it,
    with or without its package) as a pytest node id among `files`."""
    parts = context.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        matches = [f for f in files if ".".join(f.with_suffix("").parts).endswith(module)
                   and (len(".".join(f.with_suffix("").parts)) == len(module)
                        or ".".join(f.with_suffix("").parts)[-len(module) - 1] == ".")]
        if len(matches) == 1:
            return "::".join([matches[0].as_posix(), *parts[cut:]])
    return None


@dataclass
class CoverageMap:
    """Which test functions executed each line of one module, from one coverage run of its tests."""

    source: str
    contexts: dict[int, set[str]]

    @classmethod
    def measure(cls, copy: Path, module: str, tests: list[str]) -> tuple[CoverageMap, float]:
        import coverage

        target = copy / "shortlvlm" / module
        with tempfile.TemporaryDirectory(prefix="shortlvlm-coverage-") as folder:
            rc = Path(folder) / "coveragerc"
            data = Path(folder) / "coverage.data"
            rc.write_text(f"[run]\ndynamic_context = test_function\ninclude = {target}\ndata_file = {data}\n")
            outcome, seconds = _run_tests(copy, tests, timeout=3600, coverage_rc=rc)
            if outcome != "survived":
                raise SystemExit(f"the unmutated tests fail: {' '.join(tests)}; fix them first")
            measured = coverage.CoverageData(basename=str(data))
            measured.read()
            files = [f for f in measured.measured_files() if Path(f).resolve() == target.resolve()]
            lines = measured.contexts_by_lineno(files[0]) if files else {}
        return cls(target.read_text(), {line: set(found) for line, found in lines.items()}), seconds

    def tests_for(self, line: int, every: list[str]) -> list[str] | None:
        """The node ids to run for a mutant at `line`: `every` test when the statement runs at import, None when
        no test runs it."""
        found = set().union(*(self.contexts.get(n, set()) for n in _statement_lines(self.source, line)))
        if "" in found:  # executed outside any test (on import): every test depends on it
            return every
        files = _test_files(every)
        ids = sorted(filter(None, (_node_id(context, files) for context in found)))
        if len(ids) < len(found):  # a context that is not a test file's function: do not guess
            return every
        return ids or None


def _check_copy_is_imported(copy: Path, runner: Subprocesses | Forks) -> None:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run([sys.executable, "-c", "import shortlvlm; print(shortlvlm.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if isinstance(runner, Forks) and Path(found).is_relative_to(copy):
        found = runner.imported_from(copy)
    if not found or not Path(found).is_relative_to(copy):
        raise SystemExit(f"the tests would import shortlvlm from {found}, not from the mutated copy in {copy}")


def _interrupt(signum, frame) -> None:
    """SIGTERM as Ctrl-C: stop the running tests and delete the copy."""
    raise KeyboardInterrupt


EQUIVALENT = REPO / "tools" / "mutation_equivalent.tsv"


def _survivors_in(log: Path) -> set[str]:
    """The mutants (file:line:column: mutation) a saved run's output lists under "surviving mutants:"."""
    if not log.is_file():
        raise SystemExit(f"--survivors-of: {log} is not a file; save a run's output with `... > LOG`")
    lines = log.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("surviving mutants:")), None)
    if start is None:
        raise SystemExit(f"--survivors-of: {log} has no 'surviving mutants:' section (an unfinished run?)")
    named = set()
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        named.add(line.strip().split("  ")[0])
    return named


def equivalence_key(mutant: Mutant) -> tuple[str, str, int, str]:
    """(module, the mutated line's text, column within that text, mutation): still found when lines move."""
    line = (REPO / SRC / mutant.module).read_text().splitlines()[mutant.line - 1]
    return mutant.module, line.strip(), mutant.column - (len(line) - len(line.lstrip())), mutant.mutation


def equivalent_mutants(path: Path = EQUIVALENT) -> dict[tuple[str, str, int, str], str]:
    """The reviewed equivalent mutants (programs no test can tell from the original) and why, from
    tools/mutation_equivalent.tsv: module, column within the stripped line, mutation, line, reason."""
    found = {}
    for number, row in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        if not row.strip() or row.startswith("#"):
            continue
        parts = row.split("\t")
        if len(parts) != 5 or not parts[1].isdigit():
            raise SystemExit(f"{path}:{number}: expected module, column, mutation, line and reason separated by tabs")
        module, column, mutation, line, reason = parts
        found[(module, line.strip(), int(column), mutation)] = reason
    return found


def _summary(results: list[tuple[Mutant, str, float]], total: int) -> None:
    reviewed = equivalent_mutants()
    equivalent = {m for m, _, _ in results if equivalence_key(m) in reviewed}
    print("\nmodule                          killed  timeout  survived  uncovered  kill rate  equivalent  rate without")
    rows = [(module, [(m, o.split(" (")[0]) for m, o, _ in results if m.module == module])
            for module in sorted({m.module for m, _, _ in results})]
    for module, outcomes in [*rows, ("all", [(m, o.split(" (")[0]) for m, o, _ in results])]:
        names = [o for _, o in outcomes]
        dead = names.count("killed") + names.count("timeout")
        same = sum(m in equivalent for m, _ in outcomes)
        rest = len(outcomes) - same
        without = f"{dead / rest:11.0%}" if rest else f"{'-':>11}"
        print(f"{module:30} {names.count('killed'):7} {names.count('timeout'):8} {names.count('survived'):9} "
              f"{names.count('uncovered'):10}  {dead / len(outcomes):8.0%}  {same:10}  {without}"
              + (f"  ({dead} of {len(outcomes)} killed; {dead} of {rest} without the equivalent ones)"
                 if module == "all" else ""))
    missed = sum(outcome.endswith("(whole set)") for _, outcome, _ in results)
    if missed:
        print(f"{missed} mutant(s) survived the selected tests and were killed by the whole set: the coverage "
              "selection missed a test (counted as killed)")
    killed_equivalent = [m for m, o, _ in results if m in equivalent and o.split(" (")[0] in ("killed", "timeout")]
    for mutant in killed_equivalent:
        print(f"  listed as equivalent in {EQUIVALENT.name} but killed (remove it from the list): {mutant}")
    survivors = [(m, outcome) for m, outcome, _ in results if outcome in ("survived", "uncovered")]
    print("\nsurviving mutants:" if survivors else "\nno mutant survived")
    for mutant, outcome in survivors:
        note = "  (no test runs this statement)" if outcome == "uncovered" else ""
        note += f"  [equivalent: {reviewed[equivalence_key(mutant)]}]" if mutant in equivalent else ""
        print(f"  {mutant}{note}")
    mean = sum(seconds for _, _, seconds in results) / len(results)
    print(f"\n{mean:.1f} s per mutant on this machine; all {total} mutants of this selection: about "
          f"{mean * total / 3600:.1f} h")


@dataclass
class _Job:
    """One mutant's test run: on the tests that execute its statement (then, if it survives, on the whole set)."""

    index: int
    mutant: Mutant
    tests: list[str]  # the module's whole set
    selected: list[str] | None  # None: no test executes the statement
    runner: Subprocesses | Forks
    confirming: bool = False
    seconds: float = 0.0

    @property
    def running(self) -> list[str]:
        return self.tests if self.confirming else self.selected


def _sweep(jobs: list[_Job], copies: list[Path], baseline: dict, timeout: float | None, confirm: bool,
           total: int) -> list[tuple[Mutant, str, float]]:
    """Runs the jobs, one per copy of src/ at a time; each copy holds one mutant while its tests run."""
    pending = collections.deque(jobs)
    running: dict[int, tuple[_Job, object, float]] = {}
    free = list(range(len(copies)))
    done: dict[int, tuple[Mutant, str, float]] = {}
    try:
        while pending or running:
            while free and pending:
                job = pending.popleft()
                if job.selected is None and not job.confirming:
                    _finish(job, "uncovered", 0.0, None, pending, done, confirm, total)
                    continue
                slot = free.pop()
                target = copies[slot] / "shortlvlm" / job.mutant.module
                target.write_text(mutate((REPO / SRC / job.mutant.module).read_text(), job.mutant.site))
                running[slot] = (job, job.runner.start(copies[slot], job.running), time.perf_counter())
            time.sleep(0.05)
            for slot, (job, handle, started) in list(running.items()):
                code = job.runner.poll(handle)
                limit = timeout or 3 * baseline[tuple(job.tests)] + 30
                if code is None and time.perf_counter() - started <= limit:
                    continue
                if code is None:
                    job.runner.kill(handle)
                seconds = time.perf_counter() - started
                target = copies[slot] / "shortlvlm" / job.mutant.module
                target.write_text((REPO / SRC / job.mutant.module).read_text())
                del running[slot]
                free.append(slot)
                _finish(job, "timeout" if code is None else _outcome(code, job.running), seconds, code, pending,
                        done, confirm, total)
    except BaseException:  # Ctrl-C: stop every test process before the copies are deleted
        for job, handle, _ in running.values():
            job.runner.kill(handle)
        raise
    return [done[index] for index in sorted(done)]


def _finish(job: _Job, outcome: str, seconds: float, code: int | None, pending, done, confirm: bool,
            total: int) -> None:
    job.seconds += seconds
    untrusted = outcome == "timeout" or (code is not None and code not in (0, 1))
    if isinstance(job.runner, Forks) and untrusted:
        print(f"    {job.mutant}: the forked run ended with {outcome if code is None else f'exit code {code}'}; "
              "running it again as a subprocess", flush=True)
        job.runner = Subprocesses()
        pending.appendleft(job)
        return
    if not job.confirming:
        shown = "all" if job.selected is job.tests else "-" if job.selected is None else len(job.selected)
        print(f"[{job.index}/{total}] {outcome:9} {job.seconds:5.1f} s  tests {shown:>3}  {job.mutant}", flush=True)
        if outcome in ("survived", "uncovered") and job.selected is not job.tests and confirm:
            job.confirming = True  # the selection's check: a survivor meets the module's whole test set too
            pending.appendleft(job)
            return
    elif outcome != "survived":
        print(f"    {job.mutant}: the whole test set kills it ({outcome}): the coverage selection missed a test",
              flush=True)
        outcome = f"{outcome} (whole set)"
    elif job.selected is None:
        outcome = "uncovered"
    done[job.index] = (job.mutant, outcome, job.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="run a random sample of N mutants (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample's order")
    parser.add_argument("--module", action="append", default=[],
                        help="only modules whose path contains this (repeatable), e.g. importance, compensation/")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 3x the unmutated run of its tests + 30)")
    parser.add_argument("--list", action="store_true", help="print the mutants and their count; run nothing")
    parser.add_argument("--all-tests", action="store_true",
                        help="run the module's whole test set against every mutant instead of the tests that "
                             "execute its statement (slower; for checking the selection)")
    parser.add_argument("--no-confirm", dest="confirm", action="store_false",
                        help="do not run a surviving mutant again against the module's whole test set (by default "
                             "every survivor is, so a test the coverage selection missed still kills it)")
    parser.add_argument("--survivors-of", type=Path, default=None, metavar="LOG",
                        help="run only the mutants a previous run's output (saved to LOG) lists as surviving: "
                             "after adding tests, the new count without the whole sweep (valid while src/ is "
                             "unchanged since that run)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="mutants tested at a time, each in its own copy of src/ (default 1; one per core)")
    parser.add_argument("--no-fork", dest="fork", action="store_false",
                        help="start every test run as a fresh `python -m pytest` instead of forking it from this "
                             "process with torch and transformers already imported (slower; for checking)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")

    modules = [m for m in TESTS if not args.module or any(part in m for part in args.module)]
    if not modules:
        raise SystemExit(f"no module matches {args.module}; modules: {', '.join(TESTS)}")
    every = [mutant for module in modules for mutant in mutants(module)]
    chosen = list(every)
    if args.survivors_of is not None:
        named = _survivors_in(args.survivors_of)
        chosen = [mutant for mutant in every if str(mutant) in named]
        if len(chosen) < len(named & {str(m) for m in every}) or not named:
            raise SystemExit(f"{args.survivors_of} lists no surviving mutant of these modules")
    random.Random(args.seed).shuffle(chosen)
    chosen = chosen[:args.limit] if args.limit is not None else chosen
    if args.list:
        for mutant in sorted(chosen, key=lambda m: (m.module, m.site)):
            print(mutant)
        print(f"{len(chosen)} of {len(every)} mutants in {len(modules)} modules")
        return

    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    signal.signal(signal.SIGTERM, _interrupt)
    runner = Forks() if args.fork else Subprocesses()
    copies = [Path(tempfile.mkdtemp(prefix="shortlvlm-mutation-")) for _ in range(args.jobs)]
    results: list[tuple[Mutant, str, float]] = []
    try:
        for copy in copies:
            shutil.copytree(REPO / "src", copy, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            _check_copy_is_imported(copy, runner)
        baseline: dict[tuple[str, ...], float] = {}
        covered: dict[str, CoverageMap] = {}
        for module in dict.fromkeys(mutant.module for mutant in chosen):  # unmutated runs, first
            tests = TESTS[module]
            if not args.all_tests:  # under coverage.py, one context per test function
                covered[module], seconds = CoverageMap.measure(copies[0], module, tests)
                baseline.setdefault(tuple(tests), seconds)
                print(f"unmutated, with coverage by test function, {seconds:.1f} s: {' '.join(tests)}", flush=True)
            if tuple(tests) not in baseline:
                outcome, seconds = _run_tests(copies[0], tests, timeout=3600)
                if outcome != "survived":
                    raise SystemExit(f"the unmutated tests fail: {' '.join(tests)}; fix them first")
                baseline[tuple(tests)] = seconds
                print(f"baseline {seconds:.1f} s: {' '.join(tests)}", flush=True)
            if args.fork:  # the control: a forked run of the unmutated tests passes, or no fork is trusted
                outcome, seconds = _run_tests(copies[0], tests, timeout=3600, runner=runner)
                if outcome != "survived":
                    raise SystemExit(f"the unmutated tests {outcome} when forked ({' '.join(tests)}) but pass as a "
                                     "subprocess; run with --no-fork")
                print(f"unmutated, forked, {seconds:.1f} s: {' '.join(tests)}", flush=True)
        jobs = [_Job(index, mutant, TESTS[mutant.module],
                     TESTS[mutant.module] if args.all_tests else covered[mutant.module].tests_for(mutant.line,
                                                                                                  TESTS[mutant.module]),
                     runner) for index, mutant in enumerate(chosen, 1)]
        results = _sweep(jobs, copies, baseline, args.timeout, args.confirm, len(chosen))
    except KeyboardInterrupt:
        print("\ninterrupted; the work tree was never written", file=sys.stderr)
    finally:
        for copy in copies:
            shutil.rmtree(copy, ignore_errors=True)
    if results:
        _summary(results, len(every))
        if args.fork:
            print(f"({args.jobs} at a time, forked from a process with torch and transformers imported)")


if __name__ == "__main__":
    main()
