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


def test_every_listed_equivalent_mutant_exists_and_says_why():
    """tools/mutation_equivalent.tsv names mutants by their line's text, so a listed one that no longer exists
    (the code changed) is found here instead of silently excluding a live mutant."""
    from mutation import equivalence_key, equivalent_mutants, mutants

    listed = equivalent_mutants()
    existing = {equivalence_key(m) for module in {key[0] for key in listed} for m in mutants(module)}
    assert set(listed) <= existing, sorted(set(listed) - existing)
    assert all(len(reason) > 20 for reason in listed.values())


def test_equivalence_key_survives_moved_and_reindented_lines(tmp_path, monkeypatch):
    import mutation

    monkeypatch.setattr(mutation, "REPO", tmp_path)
    module = tmp_path / mutation.SRC / "m.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f(x):\n    return x.sum() > 0\n")
    (before,) = [m for m in mutation.mutants("m.py") if m.mutation == "> -> >="]
    key = mutation.equivalence_key(before)
    module.write_text("import math\n\n\ndef f(x):\n    if x is not None:\n        return x.sum() > 0\n")
    (after,) = [m for m in mutation.mutants("m.py") if m.mutation == "> -> >="]
    assert (before.line, before.column) != (after.line, after.column)
    assert mutation.equivalence_key(after) == key == ("m.py", "return x.sum() > 0", 8, "> -> >=")
