"""`compare --calib-draws`: disjoint calibration draws, one comparison each, and their mean ± sd."""

from __future__ import annotations

import json
import statistics

import pytest

from shortlvlm.cli import main
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.data.calibration_set import Calibration, read_calibration
from shortlvlm.jobs.compare_draws import DRAW_STRIDE, calibration_draws, summarize, summary_table
from shortlvlm.jobs.compare_spec import CompareError
from shortlvlm.testbeds.toy import BUNDLED_CALIBRATION
from shortlvlm.testbeds.toy.data import make_split


def test_a_files_draws_are_consecutive_disjoint_slices_that_the_offset_reproduces(tmp_path):
    draws = calibration_draws(Calibration(source=str(BUNDLED_CALIBRATION), num_samples=3), "toy", 3, tmp_path)
    bundled = toy_calibration(9)
    assert [[s.id for s in d.samples] for d in draws] == [[s.id for s in bundled[i:i + 3]] for i in (0, 3, 6)]
    assert len({d.hash for d in draws}) == 3
    # the record of draw 2 read back by any command: --calib FILE --calib-offset 6 --num-samples 3
    again = read_calibration(Calibration(source=str(BUNDLED_CALIBRATION), offset=6, num_samples=3))
    assert again.hash == draws[2].hash and draws[2].options.offset == 6
    with pytest.raises(CompareError, match=r"need 600 usable samples; .* has 256"):
        calibration_draws(Calibration(source=str(BUNDLED_CALIBRATION), num_samples=200), "toy", 3, tmp_path)
    with pytest.raises(CompareError, match="drop --calib-offset"):
        calibration_draws(Calibration(source=str(BUNDLED_CALIBRATION), offset=3), "toy", 2, tmp_path)
    split = calibration_draws(Calibration(source=str(BUNDLED_CALIBRATION)), "toy", 2, tmp_path)  # 256 // 2 each
    assert [len(d.samples) for d in split] == [128, 128]


def test_bundled_draws_are_the_bundled_set_then_generated_disjoint_ones(tmp_path):
    draws = calibration_draws(Calibration(num_samples=4), "smol-llava", 3, tmp_path)
    assert [s.id for s in draws[0].samples] == [s.id for s in toy_calibration(4)]
    for k in (1, 2):
        ids = [f"calibration-{i}" for i in range(DRAW_STRIDE * k, DRAW_STRIDE * k + 4)]
        assert [s.id for s in draws[k].samples] == ids
        assert [(s.prompt, s.answer) for s in draws[k].samples] == [
            (t.question, t.answer) for t in make_split("calibration", 4, DRAW_STRIDE * k)]
        assert draws[k].options.source == str(tmp_path / "draws" / f"draw-{k}" / "calibration.jsonl")
    written = (tmp_path / "draws" / "draw-1" / "calibration.jsonl").stat().st_mtime_ns
    rerun = calibration_draws(Calibration(num_samples=4), "smol-llava", 3, tmp_path)  # resumed: read, not rewritten
    assert [d.hash for d in rerun] == [d.hash for d in draws]
    assert (tmp_path / "draws" / "draw-1" / "calibration.jsonl").stat().st_mtime_ns == written


def _result(unpruned: float, cells: dict) -> dict:
    return {"config": {"model": "m", "bench": "shapes", "methods": ["a", "b"], "ratios": [0.1, 0.2],
                       "calibration": {"num_samples": 4, "hash": str(unpruned)}},
            "unpruned": {"score": unpruned},
            "cells": {label: {r: {"score": s, "removed_layers": [int(10 * float(r))]} for r, s in row.items()}
                      for label, row in cells.items()}}


def test_the_summary_is_the_mean_and_sample_sd_over_the_draws():
    results = [_result(90.0, {"a": {"0.1": 80.0, "0.2": 70.0}, "b": {"0.1": 60.0}}),
               _result(92.0, {"a": {"0.1": 84.0, "0.2": 64.0}, "b": {"0.1": 62.0, "0.2": 50.0}}),
               _result(94.0, {"a": {"0.1": 82.0, "0.2": 67.0}, "b": {"0.1": 58.0}})]
    summary = summarize(results)
    cell = summary["cells"]["a"]["0.1"]
    assert (cell["mean"], cell["min"], cell["max"], cell["values"]) == (82.0, 80.0, 84.0, [80.0, 84.0, 82.0])
    assert cell["sd"] == pytest.approx(2.0)  # sample sd of 80, 84, 82 by hand: sqrt((4 + 4 + 0) / 2)
    assert summary["cells"]["a"]["0.2"]["sd"] == pytest.approx(statistics.stdev([70.0, 64.0, 67.0]))
    assert "0.2" not in summary["cells"]["b"]  # measured on one draw only: no spread to report
    assert summary["unpruned"]["mean"] == 92.0
    assert [d["hash"] for d in summary["config"]["calibration_draws"]] == ["90.0", "92.0", "94.0"]
    table = summary_table(summary)
    assert "| a | 82.0 ± 2.0 (89%) [80.0] | 67.0 ± 3.0 (73%) [64.0] |" in table
    assert "| b | 60.0 ± 2.0 (65%) [58.0] | … |" in table


def test_compare_on_two_draws_writes_each_comparison_and_their_summary(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "toy", "--methods", "block-influence", "--ratios", "0.1", "--limit", "12",
                 "--num-samples", "4", "--calib-draws", "2", "--eval-batch-size", "12", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    draws = [json.loads((out / f"draw-{k}" / "results.json").read_text()) for k in (0, 1)]
    assert draws[0]["config"]["calibration"]["hash"] != draws[1]["config"]["calibration"]["hash"]
    summary = json.loads((out / "summary.json").read_text())
    scores = [d["cells"]["block-influence"]["0.1"]["score"] for d in draws]
    assert summary["cells"]["block-influence"]["0.1"]["values"] == scores
    assert summary["cells"]["block-influence"]["0.1"]["mean"] == pytest.approx(sum(scores) / 2)
    assert summary["cells"]["block-influence"]["0.1"]["removed_layers"] == [
        d["cells"]["block-influence"]["0.1"]["removed_layers"] for d in draws]
    assert (out / "accuracy_vs_ratio.png").stat().st_size > 1000 and "± " in (out / "summary.md").read_text()
    assert "| block-influence |" in stdout
    # a comparison that reads no calibration has no draws to compare: refused in one line
    assert main(["compare", "toy", "--methods", "last", "--ratios", "0.1", "--calib-draws", "2", "--out",
                 str(tmp_path / "x")]) == 2
    assert "none of --methods reads calibration data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_summary_says_where_cells_use_the_largest_ratios_ranking(tmp_path, monkeypatch):
    """Each draw is one comparison, ranked once for its largest ratio: summary.md carries the same note under its
    table as results.md (a method whose smaller-ratio cells can differ from `prune --ratio`)."""
    import shortlvlm.jobs.compare_draws as compare_draws

    def result(unpruned):
        data = _result(unpruned, {"tis-loss+lstsq": {"0.1": 80.0, "0.2": 70.0}, "sleb": {"0.1": 78.0, "0.2": 60.0}})
        data["config"]["methods"] = ["tis-loss+lstsq", "sleb"]
        return data

    scores = iter([90.0, 92.0])
    monkeypatch.setattr(compare_draws, "run_compare", lambda source, out, *args: result(next(scores)))
    monkeypatch.setattr(compare_draws, "ratio_plot", lambda *args, **kwargs: None)
    draws = [read_calibration(Calibration(source=str(BUNDLED_CALIBRATION), offset=k, num_samples=1)) for k in (0, 1)]
    compare_draws.run_compare_draws(None, tmp_path, None, [], draws)
    text = (tmp_path / "summary.md").read_text()
    assert "| tis-loss+lstsq | 80.0 ± 0.0" in text
    assert "Ranked once, for 20%: below 20% the cells of tis-loss+lstsq remove" in text and "sleb remove" not in text
    ranked_per_ratio = iter([90.0, 92.0])  # draws compared with --rank-per-ratio: no note
    monkeypatch.setattr(compare_draws, "run_compare", lambda source, out, *args: {
        **(data := result(next(ranked_per_ratio))), "config": {**data["config"], "rankings": "per-ratio"}})
    summary = compare_draws.run_compare_draws(None, tmp_path, None, [], draws)
    assert summary["config"]["rankings"] == "per-ratio"
    assert "Ranked once" not in (tmp_path / "summary.md").read_text()
