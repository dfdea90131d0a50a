"""tools/mutation.py: the mutations it makes, and the code it leaves alone (messages, annotations, docstrings)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from mutation import TESTS, mutate, sites

SOURCE = '''
def f(x: int = 2, ok: bool = True) -> int:
    """Docstring with 0 < 1."""
    if x < 1 and not ok:
        raise ValueError(f"bad {x + 1}")
    total = x.sum() - 0
    total += all(t.double() for t in x)
    return total.to(torch.float64)
'''


def test_each_kind_of_mutation_is_made_once_where_it_applies():
    assert sorted((line, text) for line, _, text in sites(SOURCE)) == [
        (4, "< -> <="), (4, "and -> or"), (4, "constant 1 -> 0"), (4, "drop unary not"),
        (6, "- -> +"), (6, ".sum() -> .mean()"), (6, "constant 0 -> 1"),
        (7, "+= -> -="), (7, "all(...) -> any(...)"), (7, "drop .double() (float64 cast)"),
        (8, "float64 -> float32")]
    assert (6, 23, "constant 0 -> 1") in sites(SOURCE)  # the column says which 0 of the line


def test_mutants_change_exactly_the_named_code():
    lines = {text: mutate(SOURCE, site) for site, (_, _, text) in enumerate(sites(SOURCE))}
    assert "if x <= 1 and (not ok):" in lines["< -> <="]
    assert "if x < 1 or not ok:" in lines["and -> or"]
    assert "if x < 1 and ok:" in lines["drop unary not"]
    assert "total = x.mean() - 0" in lines[".sum() -> .mean()"]
    assert "total -= all((t.double() for t in x))" in lines["+= -> -="]
    assert "total += all((t for t in x))" in lines["drop .double() (float64 cast)"]
    assert "return total.to(torch.float32)" in lines["float64 -> float32"]
    # the message, the annotations, the defaults' types and the docstring stay as they were
    assert all("f'bad {x + 1}'" in text and "x: int=2" in text and "0 < 1" in text for text in lines.values())


def test_every_mapped_module_and_test_path_exists():
    root = Path(__file__).resolve().parents[2]
    assert all((root / "src/shortlvlm" / module).is_file() for module in TESTS)
    assert all((root / path).exists() for paths in TESTS.values() for path in paths)
