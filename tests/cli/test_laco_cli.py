"""`prune --compensation laco` and a compare spec with laco options, as a user runs them."""

from __future__ import annotations

import json

from shortlvlm.jobs.compare_spec import parse_methods
from shortlvlm.plan import PLAN_FILENAME
from tests.cli.test_cli import run_cli


def test_prune_with_the_laco_merge_records_its_options(tmp_path, capsys):
    out = tmp_path / "merged"
    code, stdout, _ = run_cli(capsys, "prune", "toy", "--ratio", "0.2", "--method", "block-influence", "--num-samples",
                              "8", "--compensation", "laco", "--laco-scale", "0.5", "--out", out)
    assert code == 0 and "method block-influence, compensation laco" in stdout
    assert "(LaCo, scale 0.5:" in stdout and "parameter tensors, |change|/|theta|" in stdout and "verified" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert plan["compensation"] == "laco" and plan["scp"] is None
    assert plan["compensation_options"] == {"scale": 0.5}
    merged = [e for e in plan["params"]["compensation_report"] if e["edited_layer"] is not None]
    assert merged and all(e["scale"] == 0.5 and e["parameters"] > 0 and e["relative_change"] > 0 for e in merged)


def test_prune_without_calibration_when_nothing_else_reads_it(tmp_path, capsys):
    """`--method last --compensation laco` reads no calibration set: a --calib that does not exist is not opened."""
    out = tmp_path / "merged"
    code, stdout, _ = run_cli(capsys, "prune", "toy", "--ratio", "0.2", "--method", "last", "--compensation", "laco",
                              "--calib", tmp_path / "missing.jsonl", "--out", out)
    assert code == 0 and "compensation laco" in stdout and "merged into layer" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert plan["calibration"] == {}


def test_a_compare_spec_sets_the_laco_options_and_needs_no_calibration():
    (spec,) = parse_methods("last+laco[scale=0.25]")
    assert spec.compensation == "laco" and spec.make_compensation().scale == 0.25
    assert not spec.needs_calibration
    (bridged,) = parse_methods("last+lstsq")
    assert bridged.needs_calibration


def test_method_laco_prunes_the_layers_its_walk_chose_with_its_merge(tmp_path, capsys):
    out = tmp_path / "laco"
    code, stdout, _ = run_cli(capsys, "prune", "toy", "--ratio", "0.2", "--method", "laco", "--num-samples", "8",
                              "--laco-walk-merge-size", "2", "--laco-walk-threshold", "0.9", "--out", out)
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert code == 0 and "compensation laco" in stdout and plan["method"] == "laco" and plan["compensation"] == "laco"
    assert plan["scorer"]["name"] == "laco" and plan["scorer"]["merge_size"] == 2
    merges = plan["params"]["merges"]
    assert sorted(plan["removed_layers"]) == sorted(layer for m in merges for layer in m["removed"])
    merged = [(e["removed"], e["edited_layer"]) for e in plan["params"]["compensation_report"]]
    assert sorted(merged) == sorted((m["removed"], m["into"]) for m in merges)  # each merge is the walk's
    assert all(m["similarity"] >= m["threshold"] for m in merges)
