"""Layer scorers behind one interface: `rank(context, num_remove) -> LayerRanking`."""

from __future__ import annotations

from shortlvlm.scoring.angular import AngularBlock
from shortlvlm.scoring.base import LayerRanking, ScoringContext, ScoringError
from shortlvlm.scoring.block_influence import BlockInfluence
from shortlvlm.scoring.ppl import Perplexity
from shortlvlm.scoring.sleb import SLEB
from shortlvlm.scoring.taylor import TaylorPlus
from shortlvlm.scoring.tis_cosine import TISCosine
from shortlvlm.scoring.trivial import LastLayers, RandomLayers

SCORERS = {"tis-cosine": TISCosine, "block-influence": BlockInfluence, "angular": AngularBlock, "sleb": SLEB,
           "taylor": TaylorPlus, "ppl": Perplexity, "last": LastLayers, "random": RandomLayers}
# Scorers whose ranking depends on how many layers go: they need the count when scoring.
NEEDS_COUNT = {"sleb", "angular"}
# Scorers that read no calibration data.
DATA_FREE = {"last", "random"}
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


__all__ = ["DATA_FREE", "METHODS", "NEEDS_COUNT", "SCORERS", "LayerRanking", "ScoringContext", "ScoringError", "get_scorer"]
