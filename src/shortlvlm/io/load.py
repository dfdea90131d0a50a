"""Load a model and its processor (safetensors only; remote code only when asked), or its skeleton on
the meta device."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from shortlvlm.errors import ModelLoadError
from shortlvlm.io.placement import (
    Layerwise,
    default_execution_device,
    layer_device_map,
    streamed_parts,
    use_layerwise,
)
from shortlvlm.io.source import check_model_path, prepare_model


def auto_model_class(config):
    """AutoModelForImageTextToText for LVLMs transformers knows; AutoModelForCausalLM for remote code."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    auto_map = getattr(config, "auto_map", None) or {}
    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or (
        "AutoModelForImageTextToText" in auto_map
    ):
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def _load_error(name_or_path: str, err: Exception) -> ModelLoadError:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "trust_remote_code" in str(err):
        return ModelLoadError(
            f"'{name_or_path}' needs its own Python code to load; pass --trust-remote-code "
            "(trust_remote_code=True) only if you trust its source"
        )
    if Path(name_or_path).exists():
        return ModelLoadError(f"'{name_or_path}' is not a loadable model directory: {message}")
    return ModelLoadError(
        f"cannot load '{name_or_path}': it is not a local model directory and could not be "
        f"fetched from the Hub ({message})"
    )


def load_skeleton(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False) -> nn.Module:
    """The model's module tree on the meta device (no weights, no memory): for checks before loading."""
    from transformers import AutoConfig

    name = prepare_model(name_or_path)
    check_model_path(name)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            return auto_model_class(config).from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(name, err) from err


def load(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "auto",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    layerwise: bool | Layerwise = False,
    layers_path: str | None = None,
    **model_kwargs,
) -> tuple[nn.Module, object | None]:
    """Load a model and its processor from a hub id, a local directory or `toy` (safetensors only).

    `trust_remote_code` runs code shipped with the checkpoint; it is never enabled implicitly.
    `layerwise=True` (or Layerwise(activations_dir=...)) leaves every decoder layer in the
    checkpoint's files (accelerate disk offload, read in place) and puts the rest of the model on
    `device_map` if it names one device ("cuda:1", "cpu"), else on the first GPU or the CPU; capture
    passes over it then run one layer at a time (shortlvlm.capture.layerwise). `layers_path` names the
    decoder layer list for models without a built-in adapter. Other keywords (`attn_implementation`,
    `max_memory`, `offload_folder`, ...) go to transformers' `from_pretrained`.
    Returns (model, processor); processor is the tokenizer when the checkpoint has no processor,
    or None when it has neither.
    """
    from transformers import AutoConfig

    name = prepare_model(name_or_path)
    check_model_path(name)
    hub_kwargs = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        hub_kwargs["revision"] = revision
    if layerwise:
        device_map = _layerwise_map(name, device_map, layers_path, trust_remote_code)
        model_kwargs.setdefault("offload_folder", scratch_folder())
    try:
        config = AutoConfig.from_pretrained(name, **hub_kwargs)
        with warnings.catch_warnings():  # a map keyed by a parameter (LLaVA-NeXT's image_newline) is valid
            warnings.filterwarnings("ignore", message="The following device_map keys do not match any submodules")
            model = auto_model_class(config).from_pretrained(
                name,
                config=config,
                dtype=dtype,
                device_map=device_map,
                use_safetensors=True,
                **hub_kwargs,
                **model_kwargs,
            )
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(name, err) from err
    model.eval()
    if layerwise:
        use_layerwise(model, layerwise if isinstance(layerwise, Layerwise) else Layerwise())
    return model, _load_processor(name, hub_kwargs, model)


def _layerwise_map(name: str, device_map, layers_path: str | None, trust_remote_code: bool) -> dict[str, str]:
    """The device map of a layer-by-layer load: decoder layers on disk, the rest on one device."""
    from shortlvlm.models import get_adapter

    if device_map is not None and (not isinstance(device_map, (str, torch.device)) or str(device_map) == "auto"):
        raise ModelLoadError("layer-by-layer loading places the model itself: give --device-map one device "
                             "(e.g. cuda:0 or cpu) or leave it out, and no --max-memory")
    skeleton = load_skeleton(name, trust_remote_code=trust_remote_code)
    lists, on_disk = streamed_parts(skeleton, layers_path or get_adapter(skeleton).layers_path)
    device = torch.device(device_map) if device_map is not None else default_execution_device()
    return layer_device_map(skeleton, lists, device, on_disk)


def scratch_folder() -> str:
    """A folder for accelerate's offload index, removed when the process ends. Safetensors weights
    are read in place, so normally nothing but an index is written here."""
    folder = tempfile.mkdtemp(prefix="shortlvlm-offload-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# Files whose presence means a checkpoint ships a tokenizer or processor.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json",
                   "tokenizer.json", "tokenizer.model", "vocab.json", "chat_template.jinja")


def _load_processor(name: str, hub_kwargs: dict, model: nn.Module) -> object | None:
    """The processor, else the tokenizer, else None (never one invented for a bare directory).

    Architectures without a transformers processor load the parts their own chat code uses (the
    spec's chat_encoding: Qwen-VL-Chat's tokenizer, mPLUG-Owl2's tokenizer and image processor).
    """
    from transformers import AutoProcessor, AutoTokenizer

    from shortlvlm.models import REGISTRY

    spec = REGISTRY.get(type(model).__name__)
    if spec is not None and spec.chat_encoding is not None:
        return spec.chat_encoding.load(name, hub_kwargs)
    path = Path(name)
    if path.is_dir() and not any((path / f).exists() for f in PROCESSOR_FILES):
        return None
    processor = None
    for loader in (AutoProcessor, AutoTokenizer):
        try:
            processor = loader.from_pretrained(name, **hub_kwargs)
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return processor


