"""The demo: self-check of every architecture plus the toy LVLM pruned by naive rules, reported atomically."""

from __future__ import annotations

import json
import logging

import pytest

from shortlvlm.errors import OutputExistsError
from shortlvlm.jobs import demo
from shortlvlm.jobs.compare_spec import DEFAULT_METHODS
from shortlvlm.jobs.demo import DemoRequest, run_demo
from shortlvlm.log import cli_logging
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES


@pytest.mark.slow
def test_demo_reports_every_architecture_and_the_toy(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_demo(DemoRequest(out=str(out), limit=60, num_samples=16)) == 0
    report = json.loads((out / "demo_report.json").read_text())
    rows = {r["model_type"]: r for r in report["architectures"]}
    assert set(rows) == set(TINY_MODEL_TYPES)
    for r in rows.values():
        assert (r["layers_before"], r["layers_after"]) == (6, 4)
        assert r["reload_max_abs_logit_diff"] == 0.0 and r["cached_generation_agrees"] is True
    toy = report["toy"]
    assert toy["config"]["methods"] == list(DEFAULT_METHODS) and toy["config"]["ratios"] == [0.1, 0.2, 0.3]
    assert toy["unpruned"]["metrics"]["num_samples"] == 60
    for method in DEFAULT_METHODS:
        removed = [len(toy["cells"][method][r]["removed_layers"]) for r in ("0.1", "0.2", "0.3")]
        assert removed == [2, 3, 5], method
    checkpoint = json.loads((out / "toy-tis-loss-lstsq-30" / "pruning_plan.json").read_text())
    assert checkpoint["method"] == "tis-loss+lstsq" and checkpoint["compensation"] == "lstsq"
    # the checkpoint is the comparison's 30% cell: the same ranking cut at the same place
    assert checkpoint["removed_layers"] == toy["cells"]["tis-loss+lstsq"]["0.3"]["removed_layers"]
    assert (out / "toy-tis-loss-lstsq-30" / "model.safetensors").exists()
    assert (out / "compare" / "accuracy_vs_ratio.png").stat().st_size > 1000
    text = (out / "demo_report.md").read_text()
    assert "| unpruned |" in text and "| sleb |" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary directory left
    with pytest.raises(OutputExistsError):
        run_demo(DemoRequest(out=str(out)))


def test_the_demos_progress_goes_to_stderr(tmp_path, monkeypatch, capsys):
    """The comparison's progress lines go to stderr under the CLI's logging, as in `compare`; stdout carries
    only the report."""
    class Stop(Exception):
        pass

    def compare_that_logs(*args, **kwargs):
        logging.getLogger("shortlvlm.jobs.compare").info("scoring layers with sleb ...")
        raise Stop
    monkeypatch.setattr(demo, "run_compare", compare_that_logs)
    with cli_logging(), pytest.raises(Stop):  # as `shortlvlm demo` runs it
        demo.toy_comparison(tmp_path, [], None)
    out, err = capsys.readouterr()
    assert "scoring layers with sleb ..." in err and out == ""
