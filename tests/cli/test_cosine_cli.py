"""`prune --compensation cosine` and a compare spec with cosine options, as a user runs them."""

from __future__ import annotations

import json

from shortlvlm.jobs.compare_spec import parse_methods
from shortlvlm.plan import PLAN_FILENAME
from tests.cli.test_cli import run_cli


def test_prune_with_the_cosine_bridge_records_its_options(tmp_path, capsys):
    out = tmp_path / "bridged"
    code, stdout, _ = run_cli(capsys, "prune", "toy", "--ratio", "0.2", "--method", "block-influence", "--num-samples",
                              "8", "--compensation", "cosine", "--cosine-steps", "5", "--cosine-lr", "0.01",
                              "--cosine-max-tokens", "100", "--out", out)
    assert code == 0 and "method block-influence, compensation cosine" in stdout
    assert "cosine bridge, 5 Adam steps from identity: mean cosine distance" in stdout and "verified" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert plan["compensation"] == "cosine" and plan["scp"] is None
    assert plan["compensation_options"] == {"steps": 5, "lr": 0.01, "init": "identity", "tokens": "all",
                                            "max_tokens": 100, "streams": "sequential", "seed": 0}
    fitted = [e for e in plan["params"]["compensation_report"] if e["edited_layer"] is not None]
    assert fitted and all(e["steps"] == 5 and e["tokens"] == 100 < e["tokens_seen"] for e in fitted)
    assert all(e["cosine_distance_after"] < e["cosine_distance_before"] for e in fitted)


def test_a_compare_spec_sets_the_cosine_options():
    (spec,) = parse_methods("tis-loss+cosine[steps=50,init=lstsq]")
    assert spec.compensation == "cosine"
    bridge = spec.make_compensation()
    assert (bridge.steps, bridge.init, bridge.lr) == (50, "lstsq", 1e-3)
