"""benchmarks/merge_compare.py: side-by-side compare runs join into one comparison, or are refused."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from merge_compare import merge, without

CONFIG = {"model": "m", "weights": "w", "bench": "shapes", "num_questions": 10, "ratios": [0.1, 0.2], "seed": 0,
          "calibration": {"num_samples": 4, "hash": "h"}}


def run(methods, score=90.0, **config):
    return {"config": {**CONFIG, **config, "methods": methods}, "unpruned": {"score": score},
            "scoring": {m: {"seconds": 1.0, "removal_order": [1]} for m in methods},
            "cells": {m: {"0.1": {"score": 80.0}} for m in methods}}


def test_methods_scoring_and_cells_are_joined_in_order():
    merged = merge([run(["sleb"]), run(["tis-loss", "ppl"])])
    assert merged["config"]["methods"] == ["sleb", "tis-loss", "ppl"]
    assert set(merged["scoring"]) == set(merged["cells"]) == {"sleb", "tis-loss", "ppl"}
    assert {k: v for k, v in merged["config"].items() if k != "methods"} == CONFIG


@pytest.mark.parametrize("other, message", [
    (run(["ppl"], weights="other"), "configurations differ"),
    (run(["ppl"], ratios=[0.1]), "configurations differ"),
    (run(["ppl"], score=91.0), "unpruned scores differ"),
    (run(["sleb"]), "measured twice"),
])
def test_runs_that_are_not_one_comparison_are_refused(other, message):
    with pytest.raises(SystemExit, match=message):
        merge([run(["sleb"]), other])


def test_a_dropped_method_leaves_every_input_and_its_newer_run_merges_in():
    old = run(["sleb", "tis-loss"])
    newer = run(["tis-loss"])
    newer["cells"]["tis-loss"]["0.1"]["score"] = 85.0
    with pytest.raises(SystemExit, match="measured twice"):
        merge([old, newer])
    merged = merge([without(old, {"tis-loss"}), newer])
    assert merged["config"]["methods"] == ["sleb", "tis-loss"]
    assert merged["cells"]["tis-loss"]["0.1"]["score"] == 85.0
    assert "tis-loss" in old["cells"]  # the input itself is untouched
    replaced = merge([old, newer], drop={"tis-loss"})  # kept from the last input holding it
    assert replaced["config"]["methods"] == ["sleb", "tis-loss"]
    assert replaced["cells"]["tis-loss"]["0.1"]["score"] == 85.0
    alone = merge([old, run(["ppl"])], drop={"tis-loss"})  # measured once: its only run is the last
    assert alone["cells"]["tis-loss"]["0.1"]["score"] == 80.0
