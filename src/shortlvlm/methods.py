"""Method names a user gives (`--method`): a scorer, or a named recipe of scorer and compensation.

Two recipes: `tis-loss+lstsq`, the default (tis-loss scoring, its loss passes bridged by default, with the
sequential least-squares bridge; the best measured combination on smol-llava: docs/design.md §2.5.1, §2.7),
and `short-lvlm`, the paper's method (TIS-cosine scoring with SCP). Every scorer's own name is that scorer
without compensation, except `laco`: LaCo's walk with the merge it chose the layers for. `compensation` is
"none" or a compensation's name (scp, lstsq, cosine, magnitude, laco; a comparison may pair any scorer with
any of them).
"""

from __future__ import annotations

from shortlvlm.compensation import COMPENSATION_NAMES, SCP, Compensation, LstSq
from shortlvlm.errors import ScoringError
from shortlvlm.scoring import SCORERS, Scorer

SHORT_LVLM = "short-lvlm"
DEFAULT_METHOD = "tis-loss+lstsq"
COMPENSATIONS = COMPENSATION_NAMES
# method -> (scorer name, default compensation)
METHODS: dict[str, tuple[str, str]] = {
    DEFAULT_METHOD: ("tis-loss", "lstsq"),
    SHORT_LVLM: ("tis-cosine", "scp"),
    **{name: (name, "none") for name in SCORERS},
    "laco": ("laco", "laco"),  # LaCo's walk chooses the layers its merge collapses (scoring/laco.py)
}
# recipe -> the compensation class that makes a scorer with it that recipe
_RECIPES = {DEFAULT_METHOD: LstSq, SHORT_LVLM: SCP}


def resolve_method(method: str, compensation: str | None = None) -> tuple[type[Scorer], str]:
    """(the method's scorer class, the compensation: as given, else the method's default)."""
    if method not in METHODS:
        raise ScoringError(f"unknown method {method!r}; choose one of: {', '.join(sorted(METHODS))}")
    scorer, default = METHODS[method]
    compensation = compensation or default
    if compensation not in COMPENSATIONS:
        raise ScoringError(f"unknown compensation {compensation!r}; choose one of: {', '.join(COMPENSATIONS)}")
    return SCORERS[scorer], compensation


def method_name(scorer: Scorer, compensation: Compensation | None) -> str:
    """The name a plan records when none is given: a recipe's name for its scorer and compensation (tis-loss
    with lstsq, TIS-cosine with SCP), else the scorer's name."""
    for recipe, compensation_class in _RECIPES.items():
        if scorer.name == METHODS[recipe][0] and isinstance(compensation, compensation_class):
            return recipe
    return scorer.name


def recipe_name(method: str, compensation: str) -> str:
    """A scorer's name with a compensation's, named as the recipe they make (tis-loss with lstsq: tis-loss+lstsq);
    any other method as given."""
    if method in SCORERS:
        for recipe in _RECIPES:
            if METHODS[recipe] == (method, compensation):
                return recipe
    return method


def default_compensation(method: str) -> str:
    """The compensation a method implies ("none" for names that are not methods)."""
    return METHODS.get(method, ("", "none"))[1]
