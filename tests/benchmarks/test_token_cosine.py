"""benchmarks/toy_token_cosine.py: the rank correlation it reports, against the textbook formula."""

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from toy_token_cosine import spearman


def test_spearman_matches_the_formula_without_ties():
    rng = random.Random(0)
    a = [rng.random() for _ in range(30)]
    b = [x + rng.gauss(0, 0.3) for x in a]
    rank = lambda v: {i: r for r, i in enumerate(sorted(range(len(v)), key=v.__getitem__))}  # noqa: E731
    ra, rb = rank(a), rank(b)
    n = len(a)
    expected = 1 - 6 * sum((ra[i] - rb[i]) ** 2 for i in range(n)) / (n * (n * n - 1))
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, [-x for x in a]) == pytest.approx(-1.0)
    assert spearman(a, [x ** 3 for x in a]) == pytest.approx(1.0)  # ranks only: any increasing map gives 1
