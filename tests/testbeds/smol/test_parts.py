"""The shipped-parts format: LoRA factors merged by hand equal peft's own merge (the reference)."""

from __future__ import annotations

import pytest
import torch

from shortlvlm.testbeds.smol.parts import PARTS_FILE, apply_parts, lora_factors, save_parts
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model

peft = pytest.importorskip("peft")


def _trained_adapter(model):
    config = peft.LoraConfig(r=4, lora_alpha=8,
                             target_modules=r".*language_model\.layers\.\d+\.(self_attn|mlp)\..*_proj")
    wrapped = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a trained adapter: B is zero at initialisation, so give it values
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return wrapped


def test_applied_parts_equal_peft_merge(tmp_path):
    model = tiny_model("llava", 3)
    inputs = tiny_inputs(model.config)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = tiny_model("llava", 3)
    fresh.load_state_dict(original)
    with torch.no_grad():
        model.model.multi_modal_projector.linear_1.weight.add_(0.1)  # a trained projector, too
    wrapped = _trained_adapter(model)
    save_parts(tmp_path, wrapped.get_base_model(), lora_factors(wrapped), {"trained_steps": 1})
    merged = wrapped.merge_and_unload()
    assert (tmp_path / PARTS_FILE).is_file()
    apply_parts(fresh, tmp_path)
    with torch.no_grad():
        expected, actual = merged(**inputs).logits, fresh(**inputs).logits
    # float16 factors: agreement to their rounding, far below the adapter's own effect
    assert torch.allclose(actual, expected, atol=2e-3), (actual - expected).abs().max()
    with torch.no_grad():
        untouched = tiny_model("llava", 3)
        untouched.load_state_dict(original)
        apply_parts(untouched, tmp_path, with_lora=False)  # vision side again, no LM delta
        assert (untouched(**inputs).logits - expected).abs().max() > 1e-2


def test_parts_from_another_architecture_are_refused(tmp_path):
    model = tiny_model("llava", 2)
    save_parts(tmp_path, model, {}, {})
    other = tiny_model("gemma3", 2)
    with pytest.raises(ValueError, match="lacks"):
        apply_parts(other, tmp_path)
