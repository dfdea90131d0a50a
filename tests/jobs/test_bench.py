"""bench's speedups are between one model and its pruned versions; unrelated models are refused before loading."""

from __future__ import annotations

import json

import pytest

from shortlvlm.cli import main
from shortlvlm.plan import PLAN_FILENAME
from shortlvlm.testbeds.tiny import tiny_model

CHEAP = ["--rounds", "1", "--warmup", "0", "--answer-tokens", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-models")
    assert main(["prune", "toy", "--layers", "3,7", "--out", str(root / "toy-pruned"), "--no-verify"]) == 0
    tiny_model("llava", 6).save_pretrained(root / "llava6")
    return root


def test_a_model_and_its_pruned_version_are_benched_with_speedups(models, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "toy", str(models / "toy-pruned"), *CHEAP, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["decoder_layers"] for row in rows] == [16, 14] and rows[1]["ideal_speedup"] == 16 / 14
    assert "was pruned from" not in capsys.readouterr().err  # its origin is known and the same


@pytest.mark.parametrize("pair", [("toy", "llava6"), ("llava6", "toy-pruned"), ("toy-pruned", "llava6")])
def test_unrelated_models_are_refused_before_loading(models, tmp_path, capsys, pair):
    names = [name if name == "toy" else str(models / name) for name in pair]
    code = main(["bench", *names, *CHEAP, "--out", str(tmp_path / "out" / "bench.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Loading weights" not in err
    assert err.startswith(f"shortlvlm: error: {names[1]} is not {names[0]} or a pruned version of it (config hash ")
    assert "a speedup between them would mean nothing" in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_that_does_not_record_its_origin_is_benched_with_a_warning(models, tmp_path, capsys):
    old = tmp_path / "old-pruned"
    old.mkdir()
    for file in (models / "toy-pruned").iterdir():
        (old / file.name).symlink_to(file)
    plan = json.loads((models / "toy-pruned" / PLAN_FILENAME).read_text())
    del plan["model"]["fingerprint"]  # as written before plans recorded it
    (old / PLAN_FILENAME).unlink()
    (old / PLAN_FILENAME).write_text(json.dumps(plan))
    assert main(["bench", "toy", str(old), *CHEAP, "--out", str(tmp_path / "bench.json")]) == 0
    assert "does not record the config hash of the model it was pruned from" in capsys.readouterr().err
