"""A model as a job names it: hub id, folder or `toy`, how to load it, and where its parts are if no adapter knows."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import torch
from torch import nn

from shortlvlm.errors import ShortLVLMError
from shortlvlm.io.load import load, load_skeleton
from shortlvlm.io.placement import Layerwise
from shortlvlm.models import Adapter, get_adapter
from shortlvlm.options import Options, is_bool, option, options

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


def parse_max_memory(text: str) -> dict:
    """'0=70GiB,cpu=200GiB' -> {0: '70GiB', 'cpu': '200GiB'} (accelerate's max_memory)."""
    caps = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        device, sep, amount = part.partition("=")
        if not sep or not device.strip() or not amount.strip():
            raise ValueError("takes DEVICE=AMOUNT pairs such as 0=70GiB,cpu=200GiB")
        device = device.strip()
        caps[int(device) if device.isdigit() else device] = amount.strip()
    return caps


def parse_names(text: str) -> tuple[str, ...]:
    """Comma-separated names."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


DEVICE_MAP_WORDS = ("auto", "balanced", "balanced_low_0", "sequential")


def device_map_check(value: object) -> str | None:
    """A placement word, or one device that exists here (a CUDA device on a machine without one is refused)."""
    if value is None or value in DEVICE_MAP_WORDS:
        return None
    try:
        device = torch.device(str(value))
    except RuntimeError:
        return (f"must be {', '.join(DEVICE_MAP_WORDS)} or one device such as cpu, cuda or cuda:1 "
                "(a dict device map goes through the Python API)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "names a CUDA device, but this machine has none visible (torch.cuda.is_available() is False); " \
                   "leave --device-map out to load on the CPU"
        if device.index is not None and device.index >= count:
            return f"names CUDA device {device.index}, but only {count} are visible (0..{count - 1})"
    elif device.type not in ("cpu", "meta") and not (device.type == "mps" and torch.backends.mps.is_available()):
        return f"names a {device.type} device; shortlvlm places models on cpu, cuda or mps"
    return None


@options
class Loading(Options):
    """How a model is loaded: dtype, placement on devices, and whether its own code may run."""

    error = ShortLVLMError

    dtype: str = option("auto", choices=DTYPES, help="weights dtype; auto: as stored in the checkpoint")
    device_map: str | None = option(None, check=device_map_check,
                                    help="accelerate device map, e.g. 'auto' or 'cpu' (default: load on CPU)")
    max_memory: dict | None = option(None, parse=parse_max_memory,
                                     help="per-device memory caps for --device-map auto, e.g. '0=70GiB,cpu=200GiB'; "
                                          "what does not fit goes to --offload-folder (scoring, SCP and save work on "
                                          "offloaded models)")
    offload_folder: str | None = option(None, help="folder for weights accelerate offloads to disk (with --device-map "
                                                   "auto)")
    trust_remote_code: bool = option(False, check=is_bool,
                                     help="allow the checkpoint's own Python code to run (Qwen-VL-Chat, mPLUG-Owl2); "
                                          "only for sources you trust")

    @property
    def torch_dtype(self) -> str | torch.dtype:
        return self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)


@options
class Architecture(Options):
    """Where a model keeps its decoder layers, for models without a built-in adapter."""

    error = ShortLVLMError

    generic: bool = option(False, check=is_bool, help="find decoder layers and residual writers by structure")
    layers_path: str | None = option(None, help="dotted path of the decoder layer list, e.g. transformer.h")
    writers: tuple[str, ...] | None = option(None, parse=parse_names,
                                             help="comma-separated residual-writing projections inside a layer, "
                                                  "e.g. attn.c_proj,mlp.c_proj")
    image_token_id: int | None = option(None, parse=int, help="token id that marks image positions in input_ids")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model to load (`name`: hub id, local folder or `toy`) with its loading options and adapter overrides.

    `layerwise` (Layerwise options, or None) loads it for layer-by-layer calibration: decoder layers
    stay in the checkpoint's files and every capture pass over it runs one layer at a time.
    """

    name: str
    loading: Loading = dataclasses.field(default_factory=Loading)
    architecture: Architecture = dataclasses.field(default_factory=Architecture)
    layerwise: Layerwise | None = None

    def __post_init__(self) -> None:
        loading = self.loading
        if self.layerwise is not None and loading.max_memory:
            raise ShortLVLMError("--layerwise places the model itself; drop --max-memory")
        if self.layerwise is None and (loading.max_memory or loading.offload_folder) and loading.device_map is None:
            raise ShortLVLMError("--max-memory and --offload-folder need --device-map auto")

    def skeleton(self) -> nn.Module:
        """The module tree on the meta device (no weights): for the checks made before loading."""
        return load_skeleton(self.name, trust_remote_code=self.loading.trust_remote_code)

    def adapter(self, model: nn.Module) -> Adapter:
        arch = self.architecture
        return get_adapter(model, generic=arch.generic, layers_path=arch.layers_path, writers=arch.writers,
                           image_token_id=arch.image_token_id)

    def load(self) -> tuple[nn.Module, object | None]:
        """(model, processor); where accelerate placed the modules, if it placed them, is logged."""
        loading, extra = self.loading, {}
        if self.layerwise is not None:
            extra = {"layerwise": self.layerwise, "layers_path": self.architecture.layers_path}
            if loading.offload_folder:
                extra["offload_folder"] = loading.offload_folder
        else:
            extra = {k: v for k, v in (("max_memory", loading.max_memory),
                                       ("offload_folder", loading.offload_folder)) if v}
        model, processor = load(self.name, dtype=loading.torch_dtype, device_map=loading.device_map,
                                trust_remote_code=loading.trust_remote_code, **extra)
        placement = getattr(model, "hf_device_map", None)
        if placement:
            counts = Counter(str(device) for device in placement.values())
            logger.info("device map: " + ", ".join(f"{n} module group(s) on {d}" for d, n in sorted(counts.items())))
        return model, processor

