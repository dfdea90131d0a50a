"""The demo prunes and verifies every architecture and writes its report atomically."""

from __future__ import annotations

import json

import pytest

from shortlvlm.demo import run_demo
from shortlvlm.errors import OutputExistsError
from shortlvlm.models.tiny import TINY_MODEL_TYPES


def test_demo_reports_every_architecture_verified(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_demo(out) == 0
    report = json.loads((out / "demo_report.json").read_text())
    rows = {r["model_type"]: r for r in report["results"]}
    assert set(rows) == set(TINY_MODEL_TYPES)
    for r in rows.values():
        assert (r["layers_before"], r["layers_after"]) == (6, 4)
        assert r["params_after"] < r["params_before"]
        assert r["reload_max_abs_logit_diff"] == 0.0 and r["cached_generation_agrees"] is True
        assert (out / "checkpoints" / r["model_type"] / "model.safetensors").exists()
    assert "| Gemma 3 |" in (out / "demo_report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary directory left
    with pytest.raises(OutputExistsError):
        run_demo(out)
