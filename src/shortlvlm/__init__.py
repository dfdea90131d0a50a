"""shortlvlm: prune redundant decoder layers of vision-language models without training.

The method: `score` ranks the decoder layers once, `prune` removes round(ratio x L) of them and bridges
each cut. The default is `TISLoss` scoring (Token Importance Scores shortlist, answer-loss passes decide)
with `LstSq` (ReplaceMe's least-squares bridge); the Short-LVLM paper's method is `TISCosine` scoring
with `SCP` compensation; `Magnitude` is Prune&Comp's magnitude compensation. Every choice is an options
object whose fields carry their defaults and help (`TIS`, `SCP`, `LstSq`, `Magnitude`, `Calibration`,
`Layerwise`, the scorers). Surgery and checkpoints: `drop_layers`, `load`, `save`, `verify`.
Messages go to the `shortlvlm` logger; `progress_bars(False)` turns the progress bars off in a block.
"""

from shortlvlm.compensation import SCP, Cosine, LaCo, LstSq, Magnitude
from shortlvlm.data.benchmarks import load_benchmark
from shortlvlm.data.calibration_set import Calibration, CalibrationSet, read_calibration
from shortlvlm.errors import ShortLVLMError
from shortlvlm.eval.evaluate import evaluate
from shortlvlm.importance import TIS
from shortlvlm.io.load import load
from shortlvlm.io.placement import Layerwise
from shortlvlm.io.save import save
from shortlvlm.io.verify import verify
from shortlvlm.log import progress_bars
from shortlvlm.models import get_adapter
from shortlvlm.plan import Plan
from shortlvlm.pruning import Provenance, prune, score
from shortlvlm.scoring import (
    SCORERS,
    SLEB,
    AngularBlock,
    BlockInfluence,
    LaCoWalk,
    LastLayers,
    Perplexity,
    RandomLayers,
    TaylorPlus,
    TISCosine,
    TISLoss,
)
from shortlvlm.surgery import drop_layers
from shortlvlm.version import __version__

__all__ = [
    "SCORERS",
    "SCP",
    "SLEB",
    "TIS",
    "AngularBlock",
    "BlockInfluence",
    "Calibration",
    "CalibrationSet",
    "Cosine",
    "LaCo",
    "LaCoWalk",
    "LastLayers",
    "Layerwise",
    "LstSq",
    "Magnitude",
    "Perplexity",
    "Plan",
    "Provenance",
    "RandomLayers",
    "ShortLVLMError",
    "TISCosine",
    "TISLoss",
    "TaylorPlus",
    "__version__",
    "drop_layers",
    "evaluate",
    "get_adapter",
    "load",
    "load_benchmark",
    "progress_bars",
    "prune",
    "read_calibration",
    "save",
    "score",
    "verify",
]
