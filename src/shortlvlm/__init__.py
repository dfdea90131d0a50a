"""shortlvlm: prune redundant decoder layers of vision-language models without training."""

__version__ = "0.1.0"

from shortlvlm.checkpoint import load, save, verify
from shortlvlm.errors import ShortLVLMError
from shortlvlm.models import get_adapter
from shortlvlm.plan import Plan
from shortlvlm.surgery import drop_layers

__all__ = [
    "Plan",
    "ShortLVLMError",
    "__version__",
    "drop_layers",
    "get_adapter",
    "load",
    "save",
    "verify",
]
