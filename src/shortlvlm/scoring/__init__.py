"""Layer scorers behind one interface: `rank(context, num_remove) -> LayerRanking`."""

from __future__ import annotations

from shortlvlm.scoring.base import LayerRanking, ScoringContext, ScoringError
from shortlvlm.scoring.tis_cosine import TISCosine
from shortlvlm.scoring.trivial import LastLayers, RandomLayers

SCORERS = {"tis-cosine": TISCosine, "last": LastLayers, "random": RandomLayers}
# Method names a user may give: a scorer, or a named recipe (scorer + default compensation).
METHODS = {"short-lvlm": ("tis-cosine", "scp"), **{name: (name, "none") for name in SCORERS}}


def get_scorer(name: str, **params):
    """A scorer instance by name with its parameters (unknown names/parameters: ScoringError)."""
    if name not in SCORERS:
        raise ScoringError(f"unknown scoring method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    try:
        return SCORERS[name](**params)
    except TypeError as err:
        raise ScoringError(f"bad parameter for method {name!r}: {err}") from err


__all__ = ["METHODS", "SCORERS", "LayerRanking", "ScoringContext", "ScoringError", "get_scorer"]
