"""The demo: self-check of every architecture plus the toy LVLM pruned by naive rules, reported atomically."""

from __future__ import annotations

import json

import pytest

from shortlvlm.demo import run_demo
from shortlvlm.errors import OutputExistsError
from shortlvlm.models.tiny import TINY_MODEL_TYPES


@pytest.mark.slow
def test_demo_reports_every_architecture_and_the_toy(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_demo(out, limit=60) == 0
    report = json.loads((out / "demo_report.json").read_text())
    rows = {r["model_type"]: r for r in report["architectures"]}
    assert set(rows) == set(TINY_MODEL_TYPES)
    for r in rows.values():
        assert (r["layers_before"], r["layers_after"]) == (6, 4)
        assert r["reload_max_abs_logit_diff"] == 0.0 and r["cached_generation_agrees"] is True
    toy = report["toy"]
    assert set(toy) == {"unpruned", "last 5/16", "random 5/16", "short-lvlm 5/16", "tis-cosine 5/16"}
    assert (out / "toy" / "short-lvlm-30" / "pruning_plan.json").exists()
    assert all(r["num_samples"] == 60 for r in toy.values())
    assert (out / "toy" / "last-30" / "model.safetensors").exists()
    assert (out / "toy_accuracy.png").stat().st_size > 1000
    assert "| unpruned |" in (out / "demo_report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary directory left
    with pytest.raises(OutputExistsError):
        run_demo(out)
