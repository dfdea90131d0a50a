"""`compare`: argument parsing, one scoring pass per scorer, resumption, the report."""

from __future__ import annotations

import json
import logging
import math

import pytest

from shortlvlm import get_adapter, load
from shortlvlm.cli import main
from shortlvlm.compensation import LstSq
from shortlvlm.data.benchmarks import headline
from shortlvlm.data.benchmarks.shapes import load_shapes
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.eval.evaluate import evaluate
from shortlvlm.jobs.compare import measured_with, run_compare
from shortlvlm.jobs.compare_report import markdown_table
from shortlvlm.jobs.compare_spec import CompareError, CompareRequest, parse_methods, parse_ratios
from shortlvlm.jobs.source import ModelSource
from shortlvlm.log import cli_logging


def test_methods_take_a_compensation_suffix():
    specs = parse_methods("short-lvlm,block-influence+scp,tis-cosine+none")
    assert [(s.method, s.compensation, s.scorer) for s in specs] == [
        ("short-lvlm", "scp", "tis-cosine"), ("block-influence", "scp", "block-influence"),
        ("tis-cosine", "none", "tis-cosine")]


def test_settings_take_scorer_and_compensation_options():
    specs = parse_methods("tis-loss[full_steps=2]+lstsq[ridge=0.1,tokens=important],sleb+lstsq,random[seed=3]")
    assert [(s.label, s.method, s.compensation) for s in specs] == [
        ("tis-loss[full_steps=2]+lstsq[ridge=0.1,tokens=important]", "tis-loss", "lstsq"),
        ("sleb+lstsq", "sleb", "lstsq"), ("random[seed=3]", "random", "none")]
    assert (specs[0].make_scorer(0).full_steps == 2
            and specs[0].make_compensation() == LstSq(ridge=0.1, tokens="important"))
    assert specs[1].make_compensation() == LstSq() and specs[2].make_scorer(0).seed == 3
    assert parse_methods("random")[0].make_scorer(7).seed == 7  # --seed still reaches a scorer left at defaults


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("shortgpt", "unknown method 'shortgpt'"), ("sleb+lora", "unknown compensation"),
    ("last,last", "twice"), ("sleb+lstsq[ridge=-1]", r"ridge \(--lstsq-ridge\) must be a finite number >= 0"),
    ("sleb+lstsq[rank=2]", "NAME one of: ridge, tokens"), ("sleb+none[ridge=1]", "options to no compensation"),
    ("sleb+scp+lstsq", "more than one compensation"), ("tis-loss[full_steps=1],tis-loss[full_steps=2]+scp",
                                                      "two different scorer settings"),
    ("sleb[", "cannot read"), ("sleb+lstsq[ridge=x]", "cannot read 'x'"),
])
def test_bad_methods_are_named(text, message):
    with pytest.raises(CompareError, match=message):
        parse_methods(text)


@pytest.mark.parametrize("text", ["0,0.2", "0.2,1", "a,b", "", "0.1,0.1"])
def test_bad_ratios_are_refused(text):
    with pytest.raises(CompareError, match="ratio"):
        parse_ratios(text)


def test_headline_metric_per_benchmark():
    assert headline("pope", {"mean": {"f1": 85.5}}) == 85.5
    assert headline("mme", {"total": 1500.0}) == 1500.0
    assert headline("mmbench", {"circular_accuracy": 60.0, "vanilla_accuracy": 70.0}) == 60.0
    assert math.isnan(headline("shapes", {}))


class CountingLoader:
    """The toy as a model source that counts its loads; can be told to fail (a "kill") after a number of them."""

    name = "toy"

    def __init__(self, fail_after: int | None = None):
        self.loads, self.fail_after = 0, fail_after

    def load(self):
        if self.fail_after is not None and self.loads >= self.fail_after:
            raise KeyboardInterrupt
        self.loads += 1
        return load("toy")

    def adapter(self, model):
        return get_adapter(model)


def small_run(out, loader, **overrides):
    kwargs = dict(methods=parse_methods("block-influence+scp,last"), ratios=[0.1, 0.2], bench="shapes",
                  samples=load_shapes(24), calibration=toy_calibration(8), eval_batch_size=24)
    kwargs.update(overrides)
    return compare(loader, out, **kwargs)


def compare(source, out, *, samples, calibration, **settings):
    """run_compare with the request's settings given as keywords."""
    return run_compare(source, out, CompareRequest(**settings), samples, calibration)


def test_an_interrupted_comparison_resumes_without_redoing_finished_steps(tmp_path):
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        small_run(out, CountingLoader(fail_after=3))  # scoring model + 2 cells, then "killed"
    partial = json.loads((out / "results.json").read_text())
    done = sum(len(v) for v in partial["cells"].values())
    assert done == 2 and partial["unpruned"] is not None and set(partial["scoring"]) == {"block-influence", "last"}
    loader = CountingLoader()
    data = small_run(out, loader)
    assert loader.loads == 4 - done  # only the missing cells; no re-scoring, no re-evaluation of the base
    assert data["cells"]["block-influence+scp"]["0.1"] == partial["cells"]["block-influence+scp"]["0.1"]
    for label in ("block-influence+scp", "last"):
        assert [len(data["cells"][label][r]["removed_layers"]) for r in ("0.1", "0.2")] == [2, 3]
    assert data["cells"]["last"]["0.2"]["removed_layers"] == [12, 13, 14]
    table = (out / "results.md").read_text()
    assert "| block-influence+scp |" in table and "…" not in table
    assert (out / "accuracy_vs_ratio.png").stat().st_size > 1000
    assert (out / "plans" / "block-influence+scp.json").exists() and (out / "plans" / "last.json").exists()


def test_a_different_comparison_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "cmp"
    small_run(out, CountingLoader(), methods=parse_methods("last"), ratios=[0.1])
    with pytest.raises(CompareError, match="num_questions"):
        small_run(out, CountingLoader(), methods=parse_methods("last"), ratios=[0.1], samples=load_shapes(12))
    with pytest.raises(CompareError, match="calibration"):
        small_run(out, CountingLoader(), methods=parse_methods("last"), ratios=[0.1], calibration=toy_calibration(4))
    data = small_run(out, CountingLoader(), methods=parse_methods("last"), ratios=[0.2], overwrite=True)
    assert list(data["cells"]["last"]) == ["0.2"] and data["config"]["ratios"] == [0.2]


def test_more_methods_and_ratios_extend_a_comparison_without_redoing_it(tmp_path):
    out = tmp_path / "cmp"
    first = small_run(out, CountingLoader(), methods=parse_methods("block-influence,last"), ratios=[0.1])
    loader = CountingLoader()
    data = small_run(out, loader, methods=parse_methods("block-influence+scp"), ratios=[0.1, 0.2])
    assert loader.loads == 2  # the two new cells only: block influence is not scored again, the base not re-run
    assert data["config"]["methods"] == ["block-influence", "last", "block-influence+scp"]
    assert data["config"]["ratios"] == [0.1, 0.2]
    assert data["scoring"]["block-influence"] == first["scoring"]["block-influence"]
    assert data["cells"]["last"]["0.1"] == first["cells"]["last"]["0.1"] and "0.2" not in data["cells"]["last"]
    assert set(data["cells"]["block-influence+scp"]) == {"0.1", "0.2"}
    table = (out / "results.md").read_text()
    assert "| block-influence+scp |" in table and "| last | " in table and "…" in table  # last at 20%: not run


def test_a_compensation_setting_reaches_the_cells_and_their_plans(tmp_path):
    out = tmp_path / "cmp"
    data = small_run(out, CountingLoader(), methods=parse_methods("block-influence+lstsq[ridge=0.5]"), ratios=[0.2])
    cell = data["cells"]["block-influence+lstsq[ridge=0.5]"]["0.2"]
    assert len(cell["removed_layers"]) == 3
    plan = json.loads((out / "plans" / "block-influence+lstsq[ridge=0.5].json").read_text())
    assert plan["compensation"] == "lstsq"
    assert plan["compensation_options"] == {"ridge": 0.5, "tokens": "all", "prior": "identity", "streams": "sequential"}
    model, processor = load("toy")  # the cell is the library's prune with that compensation
    from shortlvlm.plan import Plan
    from shortlvlm.pruning import prune
    model, pruned = prune(model, processor, 0.2, plan=Plan.from_dict(plan), compensation=LstSq(ridge=0.5),
                          calibration=toy_calibration(8))
    metrics, _ = evaluate(model, processor, "shapes", load_shapes(24), batch_size=24)
    assert pruned.removed_layers == cell["removed_layers"] and metrics["accuracy"] == cell["metrics"]["accuracy"]


def test_an_extension_to_a_higher_ratio_scores_a_count_scorer_again(tmp_path, caplog):
    out = tmp_path / "cmp"
    small_run(out, CountingLoader(), methods=parse_methods("sleb"), ratios=[0.1])
    with caplog.at_level(logging.INFO, logger="shortlvlm"):
        data = small_run(out, CountingLoader(), methods=parse_methods("sleb"), ratios=[0.1, 0.2])
    assert any("scoring again" in line for line in caplog.messages)
    assert len(data["scoring"]["sleb"]["removal_order"]) == 3  # round(0.2 x 16)
    assert data["cells"]["sleb"]["0.2"]["removed_layers"] == sorted(data["scoring"]["sleb"]["removal_order"])


def test_weights_fingerprint_follows_the_weights_not_the_path(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from shortlvlm.io.fingerprint import weights_fingerprint
    from shortlvlm.testbeds.toy import TOY_CHECKPOINT

    copy = tmp_path / "toy-copy"
    shutil.copytree(TOY_CHECKPOINT, copy)
    assert weights_fingerprint("toy") == weights_fingerprint(copy) is not None
    tensors = load_file(copy / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3  # same names, shapes and config: a retrained model
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    assert weights_fingerprint(copy) != weights_fingerprint("toy")
    assert weights_fingerprint("no-such-org/no-such-model") is None  # not cached: no download, no crash


def test_a_comparison_of_other_weights_at_the_same_path_is_refused(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from shortlvlm.testbeds.toy import TOY_CHECKPOINT

    model_dir, out = tmp_path / "model", tmp_path / "cmp"
    shutil.copytree(TOY_CHECKPOINT, model_dir)
    kwargs = dict(methods=parse_methods("last"), ratios=[0.1], bench="shapes", samples=load_shapes(12),
                  calibration=None, eval_batch_size=12)
    first = compare(ModelSource(str(model_dir)), out, **kwargs)
    assert first["config"]["weights"]
    tensors = load_file(model_dir / "model.safetensors")
    save_file({k: v * 0.5 for k, v in tensors.items()}, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CompareError, match="weights"):  # the old results are not the new model's
        compare(ModelSource(str(model_dir)), out, **kwargs)


def test_retention_is_relative_to_the_unpruned_score():
    data = {"config": {"ratios": [0.1], "methods": ["last"]}, "unpruned": {"score": 80.0},
            "scoring": {"last": {"seconds": 0.0}}, "cells": {"last": {"0.1": {"score": 60.0}}}}
    assert "| last | 60.0 (75%) | 0.0 |" in markdown_table(data)


def test_progress_goes_to_stderr_and_only_results_to_stdout(tmp_path, capsys):
    """Under the CLI's logging, run_compare's progress lines are on stderr."""
    with cli_logging():
        compare(CountingLoader(), tmp_path / "c", methods=parse_methods("last"), ratios=[0.1], bench="shapes",
                    samples=load_shapes(4), calibration=None, eval_batch_size=4)
    out, err = capsys.readouterr()
    assert "evaluating the unpruned model ..." in err and "[1/1] last at 0.1 ..." in err
    assert out == ""


def test_cli_checks_everything_before_loading(tmp_path, capsys):
    code = main(["compare", "toy", "--methods", "short-lvlm,nope", "--out", str(tmp_path / "c")])
    assert code == 2 and "unknown method 'nope'" in capsys.readouterr().err
    code = main(["compare", "toy", "--ratios", "0.99", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "would remove" in err and "Loading weights" not in err
    assert not (tmp_path / "c").exists()


def test_cli_runs_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "c"
    code = main(["compare", "toy", "--methods", "random,tis-cosine", "--ratios", "0.2", "--limit", "12",
                 "--num-samples", "8", "--rank-per-ratio", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "| tis-cosine |" in stdout and "| random |" in stdout
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["num_questions"] == 12 and config["rankings"] == "per-ratio"


def test_prune_from_a_compared_plan_reproduces_that_cell(tmp_path, capsys):
    """plans/LABEL.json carries the method's compensation: pruning from it is that cell, not its bare scorer."""
    from shortlvlm.plan import PLAN_FILENAME

    out = tmp_path / "cmp"
    assert main(["compare", "toy", "--methods", "short-lvlm,tis-cosine", "--ratios", "0.25", "--limit", "24",
                 "--eval-batch-size", "24", "--num-samples", "8", "--out", str(out)]) == 0
    cells = json.loads((out / "results.json").read_text())["cells"]
    plans = {p.stem: json.loads(p.read_text()) for p in (out / "plans").glob("*.json")}
    assert {k: (v["method"], v["compensation"]) for k, v in plans.items()} == {
        "short-lvlm": ("short-lvlm", "scp"), "tis-cosine": ("tis-cosine", "none")}
    weights = {}
    for label in plans:
        pruned = tmp_path / label
        assert main(["prune", "toy", "--plan", str(out / "plans" / f"{label}.json"), "--ratio", "0.25",
                     "--num-samples", "8", "--no-verify", "--out", str(pruned)]) == 0
        written = json.loads((pruned / PLAN_FILENAME).read_text())
        assert written["removed_layers"] == cells[label]["0.25"]["removed_layers"]
        assert written["compensation"] == plans[label]["compensation"]
        results = tmp_path / f"{label}.json"
        assert main(["eval", str(pruned), "--bench", "shapes", "--limit", "24", "--eval-batch-size", "24",
                     "--out", str(results)]) == 0
        assert headline("shapes", json.loads(results.read_text())) == cells[label]["0.25"]["score"]
        weights[label] = (pruned / "model.safetensors").read_bytes()
    assert weights["short-lvlm"] != weights["tis-cosine"]  # the same layers go; SCP edited the kept ones


def test_a_ranking_scored_with_other_options_is_not_reused(tmp_path, caplog):
    """A folder from an older version (other scorer defaults) must not mix its ranking with the current one."""
    out = tmp_path / "cmp"
    small_run(out, CountingLoader(), methods=parse_methods("tis-cosine"), ratios=[0.1])
    plan_file = out / "plans" / "tis-cosine.json"
    plan = json.loads(plan_file.read_text())
    plan["scorer"]["tis"]["top_p"] = 0.25  # as if scored under another default
    plan_file.write_text(json.dumps(plan))
    loader = CountingLoader()
    with caplog.at_level(logging.INFO, logger="shortlvlm"):
        data = small_run(out, loader, methods=parse_methods("tis-cosine"), ratios=[0.1])
    assert any("scoring again" in line and "tis-cosine" in line for line in caplog.messages)
    assert loader.loads == 2  # scored again, and its cell measured again
    assert json.loads(plan_file.read_text())["scorer"]["tis"]["top_p"] == 0.5
    assert set(data["cells"]["tis-cosine"]) == {"0.1"}
    loader = CountingLoader()
    small_run(out, loader, methods=parse_methods("tis-cosine"), ratios=[0.1])
    assert loader.loads == 0  # now current: nothing redone


def test_a_ranking_recorded_before_an_option_existed_holds_the_value_it_was_made_with():
    """tis-loss's `bridge` came after many stored comparisons: their records lack it, and meant bridge=false
    (`TISLoss.recorded_before`), although the default is now on."""
    from shortlvlm.jobs.compare_results import same_options
    from shortlvlm.scoring import TISLoss

    old = {"name": "tis-loss", **TISLoss().to_dict()}
    del old["bridge"], old["bridge_ridge"]
    assert same_options(old, TISLoss(bridge=False))
    assert not same_options(old, TISLoss())  # the default ranks another way: scored again
    assert not same_options({**old, "full_steps": 2}, TISLoss(bridge=False))  # a recorded option still has to match
    assert same_options({"name": "tis-loss", **TISLoss().to_dict()}, TISLoss())


def test_a_cell_measured_with_other_compensation_options_is_measured_again(tmp_path, caplog):
    out = tmp_path / "cmp"
    small_run(out, CountingLoader(), methods=parse_methods("last+lstsq,last+scp"), ratios=[0.1])
    results = json.loads((out / "results.json").read_text())
    assert results["cells"]["last+lstsq"]["0.1"]["compensation_options"] == LstSq().to_dict()
    results["cells"]["last+lstsq"]["0.1"]["compensation_options"]["streams"] = "unpruned"  # as an older default
    results["cells"]["last+lstsq"]["0.1"]["score"] = -1.0
    (out / "results.json").write_text(json.dumps(results))
    loader = CountingLoader()
    with caplog.at_level(logging.INFO, logger="shortlvlm"):
        data = small_run(out, loader, methods=parse_methods("last+lstsq,last+scp"), ratios=[0.1])
    assert loader.loads == 1 and any("other compensation options" in line for line in caplog.messages)  # only that cell
    assert data["cells"]["last+lstsq"]["0.1"]["score"] != -1.0
    assert data["cells"]["last+lstsq"]["0.1"]["compensation_options"] == LstSq().to_dict()


def test_a_bridge_cell_that_records_no_prior_was_made_with_the_zero_prior():
    spec = parse_methods("last+lstsq")[0]
    current = LstSq().to_dict()
    before_prior = {k: v for k, v in current.items() if k != "prior"}
    assert current["prior"] == "identity"
    assert measured_with({"compensation_options": current}, spec)
    assert not measured_with({"compensation_options": before_prior}, spec)  # made with 'zero': measured again
    assert measured_with({"compensation_options": before_prior}, parse_methods("last+lstsq[prior=zero]")[0])
    assert not measured_with({}, spec)  # no options recorded: lstsq's prior was zero then
    assert measured_with({}, parse_methods("last+scp")[0])  # SCP's defaults never changed
    assert measured_with({"compensation_options": None}, parse_methods("last")[0])


def test_overwrite_starts_over_also_with_the_same_settings(tmp_path):
    out = tmp_path / "cmp"
    small_run(out, CountingLoader(), methods=parse_methods("last"), ratios=[0.1])
    loader = CountingLoader()
    data = small_run(out, loader, methods=parse_methods("last"), ratios=[0.1], overwrite=True)
    assert loader.loads == 2  # the unpruned model and the cell again: nothing reused
    assert list(data["cells"]["last"]) == ["0.1"] and (out / "plans" / "last.json").exists()


def test_every_method_of_a_rescored_scorer_prunes_from_the_new_ranking(tmp_path):
    """A plan file left by an older ranking is neither reused nor kept once the scorer ranks again."""
    out = tmp_path / "cmp"
    small_run(out, CountingLoader(), methods=parse_methods("block-influence,block-influence+scp"), ratios=[0.1])
    old = json.loads((out / "plans" / "block-influence.json").read_text())
    stale = dict(old, scorer={**old["scorer"], "unknown_old_option": 1},
                 params={**old["params"], "removal_order": old["params"]["removal_order"][::-1]})
    for label in ("block-influence", "block-influence+scp"):  # as a version with other options left them
        (out / "plans" / f"{label}.json").write_text(json.dumps(stale))
    data = small_run(out, CountingLoader(), methods=parse_methods("block-influence+lstsq"), ratios=[0.1])
    assert not (out / "plans" / "block-influence.json").exists()  # went with the cells of the old ranking
    data = small_run(out, CountingLoader(), methods=parse_methods("block-influence,block-influence+lstsq"),
                     ratios=[0.1])
    order = json.loads((out / "plans" / "block-influence+lstsq.json").read_text())["params"]["removal_order"]
    assert json.loads((out / "plans" / "block-influence.json").read_text())["params"]["removal_order"] == order
    assert data["cells"]["block-influence"]["0.1"]["removed_layers"] == sorted(order[:2])


def test_the_report_says_where_a_cell_is_not_what_prune_ratio_gives():
    from shortlvlm.jobs.compare_report import ranking_note

    def data(methods, ratios):
        return {"config": {"ratios": ratios, "methods": methods}}

    note = ranking_note(data(["sleb", "tis-loss[bridge=true]+lstsq", "laco"], [0.1, 0.4, 0.2]))
    assert note.startswith("Ranked once, for 40%: below 40% the cells of tis-loss[bridge=true]+lstsq, laco remove")
    assert "sleb" not in note and "`prune --ratio R`" in note
    assert ranking_note(data(["sleb", "angular", "short-lvlm", "block-influence"], [0.1, 0.4])) == ""
    assert ranking_note(data(["tis-cosine[iterative=true]"], [0.1, 0.4])) == ""
    assert ranking_note(data(["tis-loss"], [0.3])) == ""  # one ratio: ranked for it
    assert ranking_note({"config": {"ratios": [0.1, 0.4], "methods": ["tis-loss"], "rankings": "per-ratio"}}) == ""


def tis_loss_orders(counts):
    """tis-loss's (bridge off) removal order ranked for each count alone on the 8-sample toy set: the reference
    for `prune --ratio R`."""
    from shortlvlm.pruning import score
    from shortlvlm.scoring import TISLoss

    model, processor = load("toy")
    return {count: score(model, processor, scorer=TISLoss(bridge=False), calibration=toy_calibration(8),
                         num_remove=count).params["removal_order"] for count in counts}


def test_rank_per_ratio_makes_every_tis_loss_cell_what_prune_ratio_gives(tmp_path, caplog):
    """On the 8-sample toy set tis-loss ranked for 2 layers removes 4, 5 and ranked for 5 starts with 2, 4: the
    once-ranked 10% cell takes the second's prefix, the per-ratio cell is what `prune --ratio 0.1` removes."""
    orders = tis_loss_orders([2, 5])
    assert sorted(orders[2]) != sorted(orders[5][:2])  # the case this test is about
    settings = dict(methods=parse_methods("tis-loss[bridge=false],block-influence"), ratios=[0.1, 0.3])
    once = small_run(tmp_path / "once", CountingLoader(), **settings)
    per_ratio = small_run(tmp_path / "per", CountingLoader(), rank_per_ratio=True, **settings)
    label = "tis-loss[bridge=false]"
    assert once["cells"][label]["0.1"]["removed_layers"] == sorted(orders[5][:2])
    assert per_ratio["cells"][label]["0.1"]["removed_layers"] == sorted(orders[2])
    assert per_ratio["cells"][label]["0.3"]["removed_layers"] == sorted(orders[5])
    def measured(cells):
        return {r: (c["removed_layers"], c["score"]) for r, c in cells.items()}

    assert measured(per_ratio["cells"]["block-influence"]) == measured(once["cells"]["block-influence"])  # once
    plans = {p.name for p in (tmp_path / "per" / "plans").glob("*.json")}
    assert plans == {f"{label}@0.1.json", f"{label}@0.3.json", "block-influence.json"}
    scoring = per_ratio["scoring"]["tis-loss"]
    assert [scoring["ratios"][r]["removal_order"] for r in ("0.1", "0.3")] == [orders[2], orders[5]]
    assert scoring["seconds"] == pytest.approx(sum(e["seconds"] for e in scoring["ratios"].values()), abs=1e-3)
    assert per_ratio["config"]["rankings"] == "per-ratio" and once["config"]["rankings"] == "once"
    assert "Ranked once" in (tmp_path / "once" / "results.md").read_text()
    assert "Ranked once" not in (tmp_path / "per" / "results.md").read_text()
    loader = CountingLoader()  # resumed: every ranking and cell reused
    again = small_run(tmp_path / "per", loader, rank_per_ratio=True, **settings)
    assert loader.loads == 0 and again["cells"] == per_ratio["cells"]
    loader = CountingLoader()  # extended by a ratio: that ratio's search and cells only
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shortlvlm"):
        wider = small_run(tmp_path / "per", loader, rank_per_ratio=True,
                          **{**settings, "ratios": [0.1, 0.2, 0.3]})
    searches = [line for line in caplog.messages if line.startswith("scoring layers with")]
    assert searches == ["scoring layers with tis-loss for 20% ..."] and loader.loads == 1 + 2
    assert {r: wider["cells"][label][r] for r in ("0.1", "0.3")} == {r: per_ratio["cells"][label][r]
                                                                     for r in ("0.1", "0.3")}


def test_a_pruned_plan_per_ratio_reproduces_its_cell(tmp_path):
    """plans/LABEL@R.json with `prune --plan ... --ratio R` is that cell's model."""
    from shortlvlm.plan import Plan
    from shortlvlm.pruning import prune

    out = tmp_path / "per"
    data = small_run(out, CountingLoader(), methods=parse_methods("tis-loss[bridge=false]+lstsq"), ratios=[0.1, 0.3],
                     rank_per_ratio=True)
    model, processor = load("toy")
    plan = Plan.load(out / "plans" / "tis-loss[bridge=false]+lstsq@0.1.json")
    model, pruned = prune(model, processor, 0.1, plan=plan, compensation=LstSq(), calibration=toy_calibration(8))
    metrics, _ = evaluate(model, processor, "shapes", load_shapes(24), batch_size=24)
    cell = data["cells"]["tis-loss[bridge=false]+lstsq"]["0.1"]
    assert pruned.removed_layers == cell["removed_layers"] and metrics["accuracy"] == cell["metrics"]["accuracy"]


def test_rankings_once_and_per_ratio_do_not_mix_in_one_folder(tmp_path):
    out = tmp_path / "cmp"
    small_run(out, CountingLoader(), methods=parse_methods("last"), ratios=[0.1])
    with pytest.raises(CompareError, match="rankings"):
        small_run(out, CountingLoader(), methods=parse_methods("last"), ratios=[0.1], rank_per_ratio=True)
    results = json.loads((out / "results.json").read_text())
    del results["config"]["rankings"]  # a folder from before the setting: it ranked once
    (out / "results.json").write_text(json.dumps(results))
    loader = CountingLoader()
    small_run(out, loader, methods=parse_methods("last"), ratios=[0.1])
    assert loader.loads == 0
    with pytest.raises(CompareError, match="rankings"):
        small_run(out, CountingLoader(), methods=parse_methods("last"), ratios=[0.1], rank_per_ratio=True)


def test_a_new_ranking_measures_again_the_cells_it_would_not_reproduce(tmp_path, caplog):
    """Extended to a higher ratio, a count scorer ranks again; a cell whose layers its new plan does not remove at
    that ratio (here one edited to other layers) is measured again, the others are kept."""
    out = tmp_path / "cmp"
    first = small_run(out, CountingLoader(), methods=parse_methods("sleb,last"), ratios=[0.1])
    results = json.loads((out / "results.json").read_text())
    results["cells"]["sleb"]["0.1"]["removed_layers"] = [0, 1]
    results["cells"]["last"]["0.1"]["score"] = -1.0  # a scorer not ranked again: its cell stays as it is
    (out / "results.json").write_text(json.dumps(results))
    loader = CountingLoader()
    with caplog.at_level(logging.INFO, logger="shortlvlm"):
        data = small_run(out, loader, methods=parse_methods("sleb,last"), ratios=[0.1, 0.2])
    assert any("sleb at 0.1: the new sleb ranking removes other layers" in line for line in caplog.messages)
    assert data["cells"]["sleb"]["0.1"]["removed_layers"] == first["cells"]["sleb"]["0.1"]["removed_layers"]
    assert data["cells"]["last"]["0.1"]["score"] == -1.0
    assert loader.loads == 1 + 3  # scoring model; sleb at 0.1 again, sleb and last at 0.2
