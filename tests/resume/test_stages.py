"""Stage cache: a stage is reused only by a job whose result it would be, and reuse gives the same model."""

from __future__ import annotations

import pytest
import torch

from shortlvlm.compensation import SCP
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.importance import TIS
from shortlvlm.io.load import load
from shortlvlm.pruning import Provenance, prune
from shortlvlm.resume import StageCache
from shortlvlm.scoring import TISCosine


@pytest.fixture(scope="module")
def calib():
    return toy_calibration(8)


def run(calib, cache, ratio=0.25, scp_rank=8, tis_top_p=0.5):
    model, processor = load("toy", dtype=torch.float32)
    return prune(model, processor, ratio, scorer=TISCosine(tis=TIS(top_p=tis_top_p)), compensation=SCP(rank=scp_rank),
                 calibration=calib, cache=cache)


def test_reuse_gives_the_same_model_and_respects_what_the_stages_depend_on(tmp_path, calib):
    cache = StageCache(tmp_path / "stages", announce=False)
    first, first_plan = run(calib, cache)
    assert sorted(p.name for p in cache.directory.iterdir()) == [
        "plan.json", "plan.key.json", "scp.key.json", "scp.safetensors"]

    again = StageCache(cache.directory, announce=False)
    second, second_plan = run(calib, again)
    assert again.reused == ["plan", "scp"]
    assert second_plan.removed_layers == first_plan.removed_layers
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the reused statistics give the identical edit

    rank = StageCache(cache.directory, announce=False)
    _, rank_plan = run(calib, rank, scp_rank=2)  # the statistics do not depend on k: reused
    assert rank.reused == ["plan", "scp"] and rank_plan.params["compensation_report"][0]["rank"] == 2

    top_p = StageCache(cache.directory, announce=False)
    run(calib, top_p, tis_top_p=0.3)  # a different scorer parameter: both stages recomputed
    assert top_p.reused == []

    data = StageCache(cache.directory, announce=False)
    run(calib[:6], data, tis_top_p=0.3)  # other calibration data: recomputed
    assert data.reused == []

    ratio = StageCache(cache.directory, announce=False)
    run(calib[:6], ratio, tis_top_p=0.3, ratio=0.3)  # more layers removed: another plan and another gap
    assert ratio.reused == []


def test_stages_are_keyed_before_they_are_trusted(tmp_path):
    cache = StageCache(tmp_path, announce=False)
    cache.save_tensors("scp", {"a": 1}, {"hth.1": torch.eye(2, dtype=torch.float64)})
    assert torch.equal(cache.load_tensors("scp", {"a": 1})["hth.1"], torch.eye(2, dtype=torch.float64))
    assert cache.load_tensors("scp", {"a": 2}) is None
    # A rewrite killed before its key lands leaves no key: the old key can never vouch for new data.
    (tmp_path / "scp.key.json").unlink()
    assert cache.load_tensors("scp", {"a": 1}) is None



def test_other_weights_at_the_same_path_do_not_reuse_stages(tmp_path, capsys):
    """A model retrained into the same folder has the same config hash; its weights stamp differs."""
    import os
    import shutil

    from shortlvlm.cli import main
    from shortlvlm.io.fingerprint import weights_stamp
    from shortlvlm.resume import partial_dir_for
    from shortlvlm.testbeds.toy import BUNDLED_CALIBRATION, TOY_CHECKPOINT

    model_dir = shutil.copytree(TOY_CHECKPOINT, tmp_path / "model")
    stamp = weights_stamp(model_dir)
    assert stamp is not None and weights_stamp(model_dir) == stamp
    out = tmp_path / "pruned"
    argv = ["prune", str(model_dir), "--ratio", "0.25", "--num-samples", "4", "--calib", str(BUNDLED_CALIBRATION),
            "--out", str(out), "--no-verify"]

    def interrupted_job_stages(identity):  # what a killed `prune` of these weights leaves behind
        model, processor = load(str(model_dir), dtype=torch.float32)
        prune(model, processor, 0.25, calibration=toy_calibration(4),
              cache=StageCache(partial_dir_for(out), announce=False, identity={"weights": identity}),
              provenance=Provenance(source=str(model_dir)))

    interrupted_job_stages(stamp)
    weights = next(model_dir.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten in place
    assert weights_stamp(model_dir) != stamp
    capsys.readouterr()
    assert main(argv) == 0
    assert "reusing" not in capsys.readouterr().err  # stale stages of the old weights are recomputed

    interrupted_job_stages(weights_stamp(model_dir))  # stages of these very weights are reused
    assert main([*argv, "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "reusing the plan stage" in err and "reusing the lstsq stage" in err  # the default: tis-loss+lstsq


def test_bridge_statistics_are_reused_across_ridges_not_across_token_sets(tmp_path, calib):
    from shortlvlm.compensation import LstSq

    def bridged(cache, **options):
        model, processor = load("toy", dtype=torch.float32)
        return prune(model, processor, 0.25, scorer=TISCosine(), compensation=LstSq(streams="unpruned", **options),
                     calibration=calib, cache=cache)

    first = StageCache(tmp_path / "stages", announce=False)
    model, plan = bridged(first, ridge=0.1)
    assert first.reused == [] and (first.directory / "lstsq.safetensors").exists()
    ridge = StageCache(first.directory, announce=False)
    _, ridge_plan = bridged(ridge, ridge=0.5)  # the ridge is applied when solving: statistics reused
    assert ridge.reused == ["plan", "lstsq"]
    assert [e.get("ridge") for e in ridge_plan.params["compensation_report"] if e["edited_layer"] is not None] == [
        0.5] * len([e for e in plan.params["compensation_report"] if e["edited_layer"] is not None])
    again = StageCache(first.directory, announce=False)
    same, _ = bridged(again, ridge=0.1)
    assert again.reused == ["plan", "lstsq"]
    for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the reused statistics give the identical merge
    tokens = StageCache(first.directory, announce=False)
    bridged(tokens, ridge=0.1, tokens="important")
    assert tokens.reused == ["plan"]


def test_sequential_bridge_statistics_depend_on_the_ridge(tmp_path, calib):
    from shortlvlm.compensation import LstSq

    def bridged(cache, ridge):
        model, processor = load("toy", dtype=torch.float32)
        return prune(model, processor, 0.25, scorer=TISCosine(), compensation=LstSq(ridge=ridge, streams="sequential"),
                     calibration=calib, cache=cache)

    first = StageCache(tmp_path / "stages", announce=False)
    model, _ = bridged(first, 0.1)
    again = StageCache(first.directory, announce=False)
    same, _ = bridged(again, 0.1)
    assert again.reused == ["plan", "lstsq"]
    for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = StageCache(first.directory, announce=False)
    bridged(other, 0.5)  # the bridges below a run shaped its streams: measured again
    assert other.reused == ["plan"]


def test_magnitude_statistics_are_reused_for_the_same_tokens_only(tmp_path, calib):
    from shortlvlm.compensation import Magnitude

    def rescaled(cache, **options):
        model, processor = load("toy", dtype=torch.float32)
        return prune(model, processor, 0.25, scorer=TISCosine(), compensation=Magnitude(**options),
                     calibration=calib, cache=cache)

    first = StageCache(tmp_path / "stages", announce=False)
    model, plan = rescaled(first)
    assert first.reused == [] and (first.directory / "magnitude.safetensors").exists()
    again = StageCache(first.directory, announce=False)
    same, same_plan = rescaled(again)
    assert again.reused == ["plan", "magnitude"]
    assert same_plan.params["compensation_report"] == plan.params["compensation_report"]
    for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the reused statistics give the identical edit
    tokens = StageCache(first.directory, announce=False)
    rescaled(tokens, tokens="important")
    assert tokens.reused == ["plan"]
