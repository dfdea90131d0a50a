"""The plan format: new plans round-trip, and plans written before options objects (format 1) still load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shortlvlm import SCP, TIS, Plan, TISCosine, load, prune
from shortlvlm.jobs.compare_spec import parse_methods
from shortlvlm.methods import METHODS, default_compensation
from shortlvlm.plan import FORMAT, PlanError
from shortlvlm.scoring import RandomLayers, TaylorPlus, scorer_from_dict

ROOT = Path(__file__).resolve().parents[1]

# `shortlvlm score toy --out plan.json` as written before options objects (format 1; the similarity
# diagnostics trimmed): every option flat in params.
FORMAT_1_SCORE_PLAN = """{
  "method": "short-lvlm", "num_layers_before": 16, "removed_layers": [], "compensation": "scp", "ratio": 0.0,
  "layer_scores": [0.5858156364411116, 0.9704099949449301, 0.9911377318203449, 0.9744096342474222,
                   0.9931931402534246, 0.9975465033203363, 0.9865741487592459, 0.993721503764391,
                   0.9951782766729593, 0.9862827453762293, 0.9447711259126663, 0.9756402093917131,
                   0.9183174595236778, 0.961896862834692, 0.936258701607585, 0.8385250046849251],
  "params": {"scorer": "tis-cosine", "tokens": "important", "tis_top_p": 0.5, "tis_layers": "all",
             "tis_joint": false, "tis_skip_template": true, "iterative": false,
             "removal_order": [5, 8, 7, 4, 2, 6, 9, 11, 3, 1, 13, 10, 14, 12, 15, 0],
             "score_meaning": "mean cos(h_in, h_out) on important tokens; the highest go first",
             "scoring_seconds": 8.168, "template_tokens_skipped": 3,
             "visual_share_of_important_tokens": 0.5347441823687404},
  "calibration": {"source": "toy", "num_samples": 256,
                  "hash": "881a1db2027e6771f1873d2f2ca06a38bc0b8526b86c5b787b9576103242e843"},
  "model": {"name_or_path": "toy", "class": "LlavaForConditionalGeneration", "adapter": "LLaVA",
            "fingerprint": "c0e1916651bc6746"},
  "version": "0.1.0"
}"""

# The params of `shortlvlm prune toy --ratio 0.3` in format 1 (scoring and SCP options beside the results).
FORMAT_1_PRUNE_PARAMS = {
    "scorer": "tis-cosine", "tokens": "important", "tis_top_p": 0.5, "tis_layers": "all", "tis_joint": False,
    "tis_skip_template": True, "iterative": False, "removal_order": [5, 8, 7, 4, 2], "score_meaning": "…",
    "scp_rank": 8, "scp_alpha": 1.0, "scp_writers": "mlp", "scp_tokens": "important", "scp_normalize": False,
    "compensation_report": [{"removed": [2], "edited_layer": 1, "writers": ["mlp.down_proj"], "tokens": 4004,
                             "rank": 8, "alpha": 1.0, "energy_captured": 0.99471}],
    "compensation_seconds": 75.244,
}


def test_a_format_1_score_plan_loads_with_its_options_as_sub_dicts(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(FORMAT_1_SCORE_PLAN)
    plan = Plan.load(path)
    assert plan.format == FORMAT and plan.method == "short-lvlm" and plan.compensation == "scp"
    assert plan.scorer == {"name": "tis-cosine", "iterative": False, "tis": {
        "tokens": "important", "top_p": 0.5, "layers": "all", "joint": False, "skip_template": True}}
    assert scorer_from_dict(plan.scorer) == TISCosine()
    assert plan.scp is None
    assert "scorer" not in plan.params and "tis_top_p" not in plan.params
    assert plan.params["removal_order"] == [5, 8, 7, 4, 2, 6, 9, 11, 3, 1, 13, 10, 14, 12, 15, 0]
    assert plan.params["template_tokens_skipped"] == 3 and plan.calibration["num_samples"] == 256
    plan.save(path)  # written back in the current format, and read back unchanged
    assert json.loads(path.read_text())["format"] == FORMAT and Plan.load(path) == plan


def test_a_format_1_pruned_plan_keeps_its_scp_options():
    data = {**json.loads(FORMAT_1_SCORE_PLAN), "removed_layers": [2, 4, 5, 7, 8], "ratio": 0.3,
            "params": FORMAT_1_PRUNE_PARAMS}
    plan = Plan.from_dict(data)
    assert plan.scp == {"rank": 8, "alpha": 1.0, "writers": "mlp", "normalize": False, "tis": {
        "tokens": "important", "top_p": 0.5, "layers": "all", "joint": False, "skip_template": True}}
    assert SCP.from_dict(plan.scp) == SCP(tis=TIS())
    assert set(plan.params) == {"removal_order", "score_meaning", "compensation_report", "compensation_seconds"}


@pytest.mark.parametrize(("params", "scorer"), [
    ({"scorer": "random", "seed": 3}, RandomLayers(seed=3)),
    ({"scorer": "taylor", "keep_first": 1, "keep_last": 0}, TaylorPlus(keep_first=1, keep_last=0)),
    ({"scorer": "tis-cosine", "tokens": "all", "tis_top_p": 0.25, "tis_layers": [3, 7]},  # before the template skip
     TISCosine(tis=TIS(tokens="all", top_p=0.25, layers=(3, 7)))),
])
def test_format_1_scorer_options_are_converted(params, scorer):
    plan = Plan.from_dict({"method": params["scorer"], "num_layers_before": 16, "removed_layers": [],
                           "params": {**params, "removal_order": [1, 2]}})
    assert scorer_from_dict(plan.scorer) == scorer and plan.params == {"removal_order": [1, 2]}


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").rglob("plans/*.json")), ids=lambda p: p.stem)
def test_the_shipped_comparison_plans_still_load(path):
    plan = Plan.load(path)
    # compare names each plan by its setting: the method, with "+compensation" where it differs from the method's
    # default, and any options in brackets (tis-loss[bridge=true]+lstsq), which the plan's scorer must hold
    label = (plan.method if plan.compensation == default_compensation(plan.method)
             else f"{plan.method}+{plan.compensation}")
    assert label == re.sub(r"\[[^\]]*\]", "", path.stem)
    assert scorer_from_dict(plan.scorer).name == METHODS[plan.method][0]
    if "[" in path.stem:
        (spec,) = parse_methods(path.stem)
        assert scorer_from_dict(plan.scorer) == spec.make_scorer(0)
    order = plan.params["removal_order"]
    assert len(set(order)) == len(order) and set(order) <= set(range(plan.num_layers_before))


def test_pruning_from_a_format_1_plan_gives_the_planned_layers(tmp_path):
    model, processor = load("toy")
    plan = Plan.from_dict(json.loads(FORMAT_1_SCORE_PLAN))
    model, pruned = prune(model, processor, 0.3, compensation=None, plan=plan)
    assert pruned.removed_layers == [2, 4, 5, 7, 8] and pruned.method == "short-lvlm"
    assert pruned.scorer == plan.scorer and pruned.compensation == "none" and pruned.scp is None


def test_a_plan_from_a_newer_format_is_refused():
    with pytest.raises(PlanError, match="newer than this shortlvlm reads"):
        Plan.from_dict({"method": "last", "num_layers_before": 4, "removed_layers": [], "format": FORMAT + 1})
