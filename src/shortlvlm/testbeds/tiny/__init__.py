"""Tiny randomly initialised models of every supported architecture, built from config.

For tests, the demo and self-checks: no download, a few hundred thousand parameters each, and
input batches laid out the way each model's processor lays them out (image placeholders
expanded to the exact feature count, left padding on row 0, modality inputs where needed).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import AutoModelForImageTextToText, PretrainedConfig

from shortlvlm.testbeds.tiny import llava_gemma, qwen_idefics

ConfigFn = Callable[..., PretrainedConfig]
InputsFn = Callable[..., dict[str, torch.Tensor]]

BUILDERS: dict[str, tuple[ConfigFn, InputsFn]] = {
    "llava": (llava_gemma.llava_config, llava_gemma.llava_inputs),
    "llava_next": (llava_gemma.llava_next_config, llava_gemma.llava_next_inputs),
    "mistral3": (llava_gemma.mistral3_config, llava_gemma.mistral3_inputs),
    "paligemma": (llava_gemma.paligemma_config, llava_gemma.paligemma_inputs),
    "gemma3": (llava_gemma.gemma3_config, llava_gemma.gemma3_inputs),
    "internvl": (llava_gemma.internvl_config, llava_gemma.internvl_inputs),
    "qwen2_vl": (qwen_idefics.qwen2_vl_config, qwen_idefics.qwen_inputs),
    "qwen2_5_vl": (qwen_idefics.qwen2_5_vl_config, qwen_idefics.qwen_inputs),
    "qwen3_vl": (qwen_idefics.qwen3_vl_config, qwen_idefics.qwen_inputs),
    "idefics3": (qwen_idefics.idefics3_config, qwen_idefics.idefics_inputs),
    "smolvlm": (qwen_idefics.smolvlm_config, qwen_idefics.idefics_inputs),
}
TINY_MODEL_TYPES = tuple(BUILDERS)


def randomize_zero_init_(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Give random values to parameters transformers deliberately zero-initialises on the image path.

    Gemma 3 initialises multi_modal_projector.mm_input_projection_weight to zeros, so a freshly
    built random Gemma 3 would ignore its image entirely.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("mm_input_projection_weight") and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * std)
    return model


def tiny_config(model_type: str, num_layers: int = 4) -> PretrainedConfig:
    """A tiny float32 config of `model_type` whose language model has `num_layers` layers."""
    if model_type not in BUILDERS:
        raise KeyError(f"no tiny builder for {model_type!r}; known: {', '.join(BUILDERS)}")
    return BUILDERS[model_type][0](num_layers)


def tiny_model(model_type: str, num_layers: int = 4, seed: int = 0) -> nn.Module:
    """A tiny randomly initialised model (eval mode) of `model_type`."""
    config = tiny_config(model_type, num_layers)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    return randomize_zero_init_(model, seed).eval()


def tiny_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A processor-like multimodal batch for a tiny model with this config."""
    return BUILDERS[config.model_type][1](config, batch_size, seed)


__all__ = ["BUILDERS", "TINY_MODEL_TYPES", "tiny_config", "tiny_inputs", "tiny_model"]
