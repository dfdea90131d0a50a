"""Layer scorers behind one interface (`Scorer.rank(context, num_remove) -> LayerRanking`), registered by name.

A scorer's fields are its options; its traits are class attributes: `needs_count` (the ranking depends
on how many layers go) and `needs_data` (it reads the calibration set).
"""

from __future__ import annotations

from shortlvlm.errors import ScoringError
from shortlvlm.scoring.angular import AngularBlock
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext
from shortlvlm.scoring.block_influence import BlockInfluence
from shortlvlm.scoring.laco import LaCoWalk
from shortlvlm.scoring.ppl import Perplexity
from shortlvlm.scoring.sleb import SLEB
from shortlvlm.scoring.taylor import TaylorPlus
from shortlvlm.scoring.tis_cosine import TISCosine
from shortlvlm.scoring.tis_loss import TISLoss
from shortlvlm.scoring.trivial import LastLayers, RandomLayers

SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (TISCosine, BlockInfluence, AngularBlock, SLEB, TaylorPlus,
                                                              Perplexity, TISLoss, LaCoWalk, LastLayers,
                                                              RandomLayers)}


def get_scorer(name: str, **params) -> Scorer:
    """A scorer instance by name with its options (unknown names/options: ScoringError)."""
    if name not in SCORERS:
        raise ScoringError(f"unknown scoring method {name!r}; choose one of: {', '.join(sorted(SCORERS))}")
    try:
        return SCORERS[name](**params)
    except TypeError as err:
        raise ScoringError(f"bad parameter for method {name!r}: {err}") from err


def scorer_to_dict(scorer: Scorer) -> dict:
    """The plan's record of a scorer: its name and options."""
    return {"name": scorer.name, **scorer.to_dict()}


def scorer_from_dict(data: object) -> Scorer:
    """The scorer a plan records (`scorer_to_dict`)."""
    if not isinstance(data, dict) or data.get("name") not in SCORERS:
        raise ScoringError(f"the plan's scorer must name one of {', '.join(sorted(SCORERS))}, got {data!r:.80}; "
                           "write plans with `shortlvlm score`")
    cls = SCORERS[data["name"]]
    return cls.from_record({k: v for k, v in data.items() if k != "name"})


__all__ = [
    "SCORERS",
    "SLEB",
    "AngularBlock",
    "BlockInfluence",
    "LaCoWalk",
    "LastLayers",
    "LayerRanking",
    "Perplexity",
    "RandomLayers",
    "Scorer",
    "ScoringContext",
    "ScoringError",
    "TISCosine",
    "TISLoss",
    "TaylorPlus",
    "get_scorer",
    "scorer_from_dict",
    "scorer_to_dict",
]
