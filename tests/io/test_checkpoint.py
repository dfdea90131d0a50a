"""Saving a pruned model writes a standard checkpoint that plain transformers reloads identically."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from shortlvlm import Plan, drop_layers, get_adapter, save, verify
from shortlvlm.errors import ModelLoadError, OutputExistsError, VerificationError
from shortlvlm.io.load import load
from shortlvlm.plan import PLAN_FILENAME
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model

REMOVE = [2, 4]


def pruned_plan(model, removed=REMOVE):
    return Plan(method="manual", num_layers_before=get_adapter(model).num_layers, removed_layers=removed)


def test_save_reload_gives_identical_logits_and_config(tiny, tmp_path):
    model, inputs = tiny
    plan = pruned_plan(model)
    before = {f: list(getattr(model.config.get_text_config(), f))
              for f in get_adapter(model).per_layer_fields(model.config.get_text_config())}
    drop_layers(model, REMOVE)
    out = save(model, None, plan, tmp_path / "pruned")
    report = verify(model, out, inputs)
    assert report.max_abs_logit_diff <= report.tolerance
    assert report.generation_agrees is True

    attn = model.config._attn_implementation
    reloaded = AutoModelForImageTextToText.from_pretrained(out, attn_implementation=attn).eval()
    text = reloaded.config.get_text_config()
    assert text.num_hidden_layers == 4
    assert len(get_adapter(reloaded).layers) == 4
    for field_name, values in before.items():
        assert list(getattr(text, field_name)) == [values[i] for i in (0, 1, 3, 5)]
    attended = inputs["attention_mask"].bool()  # left-padding rows attend to nothing
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits[attended], model(**inputs).logits[attended],
                                   rtol=0, atol=1e-6)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "config.json", "generation_config.json", "model.safetensors", PLAN_FILENAME]
    )
    assert json.loads((out / PLAN_FILENAME).read_text())["removed_layers"] == REMOVE


def test_verify_detects_a_checkpoint_that_differs(tmp_path):
    model = tiny_model("llava", 6)
    inputs = tiny_inputs(model.config)
    drop_layers(model, REMOVE)
    out = save(model, None, pruned_plan(model), tmp_path / "pruned")
    with torch.no_grad():
        model.get_submodule("model.language_model.layers.1.mlp.down_proj").weight.mul_(1.5)
    with pytest.raises(VerificationError, match="differs"):
        verify(model, out, inputs)


def test_failed_check_leaves_nothing_and_keeps_existing_output(tmp_path):
    model = tiny_model("llava", 6)
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "keep.txt").write_text("previous result")

    def failing_check(tmp):
        assert (tmp / "model.safetensors").exists()  # complete before the check runs
        raise VerificationError("simulated failure")

    with pytest.raises(VerificationError):
        save(model, None, pruned_plan(model, [1]), out, overwrite=True, check=failing_check)
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"]  # no temp or backup dirs left
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failure_in_new_parent_directory_leaves_nothing(tmp_path):
    model = tiny_model("llava", 4)
    with pytest.raises(VerificationError):
        save(model, None, pruned_plan(model, [1]), tmp_path / "a" / "b" / "out",
             check=lambda tmp: (_ for _ in ()).throw(VerificationError("x")))
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    model = tiny_model("llava", 4)
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save(model, None, pruned_plan(model, [1]), tmp_path / "out")
    save(model, None, pruned_plan(model, [1]), tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_load_reads_a_local_checkpoint_in_safetensors(tmp_path):
    model = tiny_model("qwen2_vl", 4)
    model.save_pretrained(tmp_path / "m")
    loaded, processor = load(tmp_path / "m", dtype=torch.float32)
    assert type(loaded).__name__ == "Qwen2VLForConditionalGeneration"
    assert processor is None  # this checkpoint ships no tokenizer or processor
    assert not loaded.training
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_load_refuses_pickle_only_checkpoints(tmp_path, monkeypatch):
    model = tiny_model("llava", 2)
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin")
    weights.unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was unpickled"))
    with pytest.raises(ModelLoadError, match=r"only as pickle files \(pytorch_model\.bin\).*safetensors only"):
        load(tmp_path / "m")


def test_load_errors_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="could not be fetched"):
        load("no-such-org/no-such-model-xyz")


def test_load_with_a_device_map_then_prune_save_verify(tmp_path):
    model = tiny_model("gemma3", 6)
    inputs = tiny_inputs(model.config)
    model.save_pretrained(tmp_path / "m")
    loaded, _ = load(tmp_path / "m", dtype=torch.float32, device_map="cpu")
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    drop_layers(loaded, REMOVE)
    out = save(loaded, None, pruned_plan(loaded), tmp_path / "out", check=lambda tmp: verify(loaded, tmp, inputs))
    assert AutoModelForImageTextToText.from_pretrained(out).config.text_config.num_hidden_layers == 4
