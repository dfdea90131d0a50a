"""smol-llava's training recipe runs end to end on the real SmolLM2 (a few steps) and writes usable parts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from shortlvlm.smol.parts import META_FILE, PARTS_FILE

pytest.importorskip("peft")


@pytest.mark.slow
def test_two_stage_recipe_writes_parts_and_keeps_the_projector(smol_wheel, tmp_path, monkeypatch):
    from shortlvlm.smol import train

    monkeypatch.setenv("SHORTLVLM_CACHE", str(smol_wheel.parent))
    out = tmp_path / "run"
    train.main(["--out", str(out), "--lm-source", "wheel", "--align-steps", "3", "--align-batch", "8",
                "--steps", "2", "--batch-size", "6", "--eval-every", "2", "--val-size", "6", "--rank", "2"])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["done"] is True
    assert any(entry.get("step") == 2 for entry in log)
    parts = load_file(out / PARTS_FILE)
    lora = [k for k in parts if k.startswith("lora.")]
    # every linear layer of the 30 LM layers: 7 adapters x 2 factors
    assert len(lora) == 30 * 7 * 2
    assert parts["lora.model.language_model.layers.0.self_attn.q_proj.A"].shape == (2, 576)
    assert parts["lora.model.language_model.layers.0.mlp.down_proj.B"].shape == (576, 2)
    stage1 = torch.load(out / "stage1.pt", weights_only=True)
    for name, value in stage1.items():  # stage 2 leaves the vision side as stage 1 left it
        assert torch.equal(parts[name], value), name
    assert json.loads((out / META_FILE).read_text())["trained_steps"] == 2
