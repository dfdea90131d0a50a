"""Reload a saved checkpoint as a user would and prove it reproduces the in-memory model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from shortlvlm.errors import VerificationError
from shortlvlm.io.load import auto_model_class, load_skeleton, scratch_folder
from shortlvlm.io.offload import input_device
from shortlvlm.io.placement import layer_device_map, offloaded_layer_lists, untied_head


@dataclass
class VerifyReport:
    """Outcome of reloading a saved checkpoint and comparing it with the in-memory model."""

    num_layers: int
    max_abs_logit_diff: float
    tolerance: float
    generation_agrees: bool | None


def _special_token_ids(config, name_parts: tuple[str, ...] = ("",)) -> set[int]:
    """Token ids named in the config (attributes ending in _token_id/_token_index[es])."""
    ids = set()
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        for key, value in vars(cfg).items():
            if key.endswith(("_token_id", "_token_index", "_token_ids")) and any(p in key for p in name_parts):
                ids.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    return ids


def text_probe_inputs(model: nn.Module, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic text-only batch (no special or image tokens) that any model accepts."""
    vocab = model.config.get_text_config().vocab_size
    special = _special_token_ids(model.config)
    allowed = torch.tensor([i for i in range(min(vocab, 4096)) if i not in special])
    generator = torch.Generator().manual_seed(seed)
    ids = allowed[torch.randint(len(allowed), (1, length), generator=generator)]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _reload(model: nn.Module, out: Path, trust_remote_code: bool) -> nn.Module:
    """Reload out as a user would (Auto classes, else the model's own class), same dtype and attention."""
    from transformers import AutoConfig

    kwargs = {"dtype": model.dtype}
    attn = getattr(model.config, "_attn_implementation", None)
    if attn is not None:
        kwargs["attn_implementation"] = attn
    offloaded_lists = offloaded_layer_lists(model)
    if offloaded_lists:
        # The source did not fit in memory: keep the reloaded copy's layer lists on disk as well.
        skeleton = load_skeleton(out, trust_remote_code=trust_remote_code)
        kwargs["device_map"] = layer_device_map(skeleton, offloaded_lists, input_device(model), untied_head(skeleton))
        kwargs["offload_folder"] = scratch_folder()
    try:
        config = AutoConfig.from_pretrained(out, trust_remote_code=trust_remote_code)
    except (KeyError, ValueError):  # a class not registered with the Auto API (e.g. hand-built)
        return type(model).from_pretrained(out, **kwargs).eval()
    auto = auto_model_class(config)
    return auto.from_pretrained(out, trust_remote_code=trust_remote_code, **kwargs).eval()


def _greedy(model: nn.Module, inputs: dict, use_cache: bool, new_tokens: int) -> torch.Tensor:
    # A generated image placeholder would make the uncached re-run ask for image features.
    placeholders = _special_token_ids(model.config, ("image", "video", "vision", "boi", "eoi"))
    return model.generate(
        **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        use_cache=use_cache, suppress_tokens=sorted(placeholders) or None,
    )


@torch.no_grad()
def verify(
    model: nn.Module,
    out_dir: str | os.PathLike,
    inputs: dict[str, torch.Tensor] | None = None,
    *,
    check_generation: bool = True,
    new_tokens: int = 4,
    trust_remote_code: bool = False,
) -> VerifyReport:
    """Reload out_dir as a user would and check it reproduces `model` (logits, cached generation)."""
    out = Path(out_dir)
    reloaded = _reload(model, out, trust_remote_code)
    device = input_device(model)
    if getattr(reloaded, "hf_device_map", None) is None:
        reloaded.to(device)
    inputs = {k: v.to(device) for k, v in (inputs or text_probe_inputs(model)).items()}
    expected = model(**inputs).logits.float()
    actual = reloaded(**inputs).logits.float()
    if "attention_mask" in inputs and expected.shape == actual.shape and expected.shape[:2] == inputs[
            "attention_mask"].shape:  # not where forward lengthens the sequence (mPLUG-Owl2 expands images)
        # Padding positions attend to nothing; their logits are arbitrary and not compared.
        attended = inputs["attention_mask"].bool()
        expected, actual = expected[attended], actual[attended]
    if expected.shape != actual.shape:
        raise VerificationError(
            f"reloaded model gives logits of shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
        )
    low_precision = model.dtype in (torch.float16, torch.bfloat16)
    tolerance = (1e-2 if low_precision else 1e-5) * max(1.0, expected.abs().max().item())
    diff = (expected - actual).abs().max().item()
    if not diff <= tolerance:
        raise VerificationError(
            f"reloaded checkpoint in {out} differs from the pruned model: max |logit diff| "
            f"{diff:.3g} > {tolerance:.3g}"
        )
    agrees = None
    if check_generation and hasattr(reloaded, "generate"):
        cached = _greedy(reloaded, inputs, True, new_tokens)
        uncached = _greedy(reloaded, inputs, False, new_tokens)
        agrees = torch.equal(cached, uncached)
        if not agrees:
            raise VerificationError(
                f"checkpoint in {out}: greedy generation with and without KV cache disagree "
                "(a stale layer index or per-layer config entry)"
            )
    layers = getattr(reloaded.config.get_text_config(), "num_hidden_layers", None)
    if layers != model.config.get_text_config().num_hidden_layers:
        raise VerificationError(
            f"reloaded config has num_hidden_layers={layers}, the pruned model has "
            f"{model.config.get_text_config().num_hidden_layers}"
        )
    return VerifyReport(layers, diff, tolerance, agrees)
