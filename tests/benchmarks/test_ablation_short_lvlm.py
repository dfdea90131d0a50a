"""benchmarks/ablation_short_lvlm.py: runs that build the same weights share one evaluation, others never do."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from ablation_short_lvlm import method_options, model_identity, planned_runs


def identity(key, removed, runs):
    return model_identity(removed, method_options(runs[key][0])[1])


def test_sweep_settings_equal_to_the_defaults_are_the_grid_model():
    runs = planned_runs(with_sweeps=True)
    grid = identity("tis-cosine + scp (Short-LVLM) @ 0.3", [3, 4, 5], runs)
    for default in ("scp alpha: alpha=1.0 @ 0.3", "scp rank k: k=8 @ 0.3", "scp writers: writers=mlp @ 0.3"):
        assert identity(default, [3, 4, 5], runs) == grid
    # a setting that changes the SCP edit, the removed layers, or drops SCP is another model
    assert identity("scp alpha: alpha=fit @ 0.3", [3, 4, 5], runs) != grid
    assert identity("scp rank k: k=4 @ 0.3", [3, 4, 5], runs) != grid
    assert identity("tis-cosine + scp (Short-LVLM) @ 0.3", [3, 4, 6], runs) != grid
    assert identity("tis-cosine @ 0.3", [3, 4, 5], runs) != grid


def test_scorers_without_compensation_share_a_model_only_when_they_remove_the_same_layers():
    runs = planned_runs(with_sweeps=True)
    assert identity("cosine, all tokens @ 0.3", [5, 4], runs) == identity("tis_top_p: top_p=0.1 @ 0.3", [4, 5], runs)
    assert identity("cosine, all tokens @ 0.3", [4, 5], runs) != identity("tis-cosine @ 0.3", [4, 6], runs)


def test_without_sweeps_only_the_grid_is_planned():
    assert len(planned_runs(with_sweeps=False)) == 5 * 4
    assert len(planned_runs(with_sweeps=True)) == 5 * 4 + 23


def test_runs_at_30_percent_come_first():
    ratios = [ratio for _, ratio in planned_runs(with_sweeps=True).values()]
    first_other = next(i for i, ratio in enumerate(ratios) if ratio != 0.3)
    assert set(ratios[:first_other]) == {0.3} and 0.3 not in ratios[first_other:]


def test_an_unfinished_run_is_reported_with_what_it_lacks(tmp_path):
    from ablation_short_lvlm import write_report

    family = {"exists": 100.0}
    entry = {"accuracy": 40.0, "per_family": family, "removed_layers": [3, 4], "same_model_as": None}
    results = {"model": "smol-llava", "limit": 1200, "num_samples": 64,
               "runs": {"unpruned": {"accuracy": 80.0, "per_family": family, "removed_layers": []},
                        "tis-cosine @ 0.3": entry,
                        "scp rank k: k=1 @ 0.3": {**entry, "accuracy": 20.0}}}
    write_report(results, tmp_path, "partial")
    text = (tmp_path / "partial.md").read_text()
    assert "| tis-cosine | not run | not run | 40.00 (50.0) | not run |" in text
    assert "| scp rank k | k=1 | 20.00 | 25.0 | [3, 4] |" in text
    assert f"Not run yet ({len(planned_runs(with_sweeps=True)) - 2})" in text
    assert (tmp_path / "partial.png").exists()
