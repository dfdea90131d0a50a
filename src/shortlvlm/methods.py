"""Method names a user gives (`--method`): a scorer, or a named recipe of scorer and compensation.

`short-lvlm` is TIS-cosine scoring with SCP; every scorer's own name is that scorer without
compensation. `compensation` is "none" or a compensation's name, scp or lstsq (a comparison may pair any
scorer with any of them).
"""

from __future__ import annotations

from shortlvlm.compensation import COMPENSATION_NAMES, SCP, Compensation
from shortlvlm.errors import ScoringError
from shortlvlm.scoring import SCORERS, Scorer

SHORT_LVLM = "short-lvlm"
COMPENSATIONS = COMPENSATION_NAMES
# method -> (scorer name, default compensation)
METHODS: dict[str, tuple[str, str]] = {SHORT_LVLM: ("tis-cosine", "scp"), **{name: (name, "none") for name in SCORERS}}


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
    """The name a plan records when none is given: short-lvlm for its recipe (TIS-cosine with SCP), else the
    scorer's name."""
    return SHORT_LVLM if scorer.name == METHODS[SHORT_LVLM][0] and isinstance(compensation, SCP) else scorer.name


def default_compensation(method: str) -> str:
    """The compensation a method implies ("none" for names that are not methods)."""
    return METHODS.get(method, ("", "none"))[1]
