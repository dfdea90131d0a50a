"""Public functions stay small: at most 8 parameters (`shortlvlm.prune` at most 10), read from the source (AST).

Every function or method whose name has no leading underscore, in every module under src/shortlvlm
except src/shortlvlm/testbeds/ (the test beds' training code, not the runtime), counts its parameters
with *args and **kwargs as one each and without `self`/`cls`. Settings beyond that belong in an
options object (shortlvlm.options) or a request (EvalRequest, CompareRequest, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import shortlvlm
from shortlvlm.compensation import COMPENSATIONS
from shortlvlm.scoring import SCORERS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "shortlvlm"
EXCLUDED = PACKAGE / "testbeds"
LIMIT = 8
LIMITS = {("pruning.py", "prune"): 10}


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return len([n for n in names if n not in ("self", "cls")]) + (args.vararg is not None) + (args.kwarg is not None)


def public_functions() -> list[tuple[str, str, int]]:
    """(file relative to the package, function name, parameter count) of every public function and method."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if EXCLUDED in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                found.append((path.relative_to(PACKAGE).as_posix(), node.name, parameter_count(node)))
    return found


def test_public_functions_take_at_most_eight_parameters():
    functions = public_functions()
    assert any(name == "prune" for _, name, _ in functions)  # the walk found the package
    over = [f"{file}:{name} takes {count}" for file, name, count in functions
            if count > LIMITS.get((file, name), LIMIT)]
    assert over == []


def test_prune_takes_at_most_ten_parameters():
    counts = [count for file, name, count in public_functions() if (file, name) == ("pruning.py", "prune")]
    assert counts and max(counts) <= 10


def test_every_scorer_and_compensation_is_exported():
    classes = [*SCORERS.values(), *COMPENSATIONS.values()]
    missing = sorted(cls.__name__ for cls in classes if cls.__name__ not in shortlvlm.__all__)
    assert missing == []
    assert all(getattr(shortlvlm, cls.__name__) is cls for cls in classes)
