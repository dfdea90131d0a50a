"""Scoring, SCP and save on a model dispatched by accelerate with disk offload equal the in-memory run.

`max_memory={"cpu": "2MiB"}` forces accelerate to put the toy's language model on disk: its
parameters are meta placeholders and every forward pass loads them from the offload folder.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from shortlvlm import get_adapter
from shortlvlm.compensation import SCP, LstSq
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.errors import ShortLVLMError
from shortlvlm.io.load import load
from shortlvlm.io.offload import has_offloaded_weights, input_device, is_offloaded, read_weight
from shortlvlm.jobs.checkpoint import write_checkpoint
from shortlvlm.pruning import prune, score
from shortlvlm.scoring import TaylorPlus, get_scorer

CALIB = 8


@pytest.fixture(scope="module")
def calib():
    return toy_calibration(CALIB)


def offloaded(folder):
    model, processor = load("toy", dtype=torch.float32, device_map="auto", max_memory={"cpu": "2MiB"},
                            offload_folder=str(folder))
    adapter = get_adapter(model)
    assert "disk" in set(model.hf_device_map.values())
    assert all(is_offloaded(layer.mlp.down_proj) for layer in adapter.layers)  # really offloaded
    assert adapter.layers[3].mlp.down_proj.weight.device.type == "meta"
    return model, processor


def in_memory():
    return load("toy", dtype=torch.float32)


def folder_digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("method", ["tis-cosine", "block-influence", "angular", "ppl"])
def test_scores_under_disk_offload_equal_the_in_memory_scores(tmp_path, calib, method):
    model, processor = offloaded(tmp_path / "offload")
    assert input_device(model).type == "cpu"
    reference = score(*in_memory(), scorer=get_scorer(method), calibration=calib)
    plan = score(model, processor, scorer=get_scorer(method), calibration=calib)
    assert plan.params["removal_order"] == reference.params["removal_order"]
    assert plan.layer_scores == pytest.approx(reference.layer_scores, rel=1e-6, nan_ok=True)


@pytest.mark.parametrize("compensation", [SCP(alpha=1.0), SCP(alpha="fit"), LstSq()], ids=["scp", "scp-fit", "lstsq"])
def test_compensation_and_save_under_disk_offload_equal_the_in_memory_checkpoint(tmp_path, calib, compensation):
    folder = tmp_path / "offload"
    model, processor = offloaded(folder)
    before = folder_digest(folder)
    weights_before = [read_weight(layer.mlp.down_proj, "weight").clone() for layer in get_adapter(model).layers]
    model, plan = prune(model, processor, 0.25, compensation=compensation, calibration=calib)
    assert has_offloaded_weights(model)
    reference, reference_plan = prune(*in_memory(), 0.25, compensation=compensation, calibration=calib)
    assert plan.removed_layers == reference_plan.removed_layers
    report, reference_report = plan.params["compensation_report"], reference_plan.params["compensation_report"]
    found = "alpha" if isinstance(compensation, SCP) else "gap_left"
    assert [e[found] for e in report] == pytest.approx([e[found] for e in reference_report], rel=1e-9)
    edited = {e["edited_layer"] for e in report}
    for position, original in enumerate(plan.kept_layers):  # the edit reached the offloaded weight, only there
        now = read_weight(get_adapter(model).layers[position].mlp.down_proj, "weight")
        assert torch.equal(now, weights_before[original]) == (original not in edited), original
    out, verified = write_checkpoint(model, processor, plan, tmp_path / "out")  # reload-verified
    assert verified is not None and verified.max_abs_logit_diff <= verified.tolerance
    saved, _ = load(out, dtype=torch.float32)
    expected = reference.state_dict()
    actual = saved.state_dict()
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name
    assert folder_digest(folder) == before  # the offload folder (and the source) were not written to


def test_taylor_refuses_offloaded_weights(tmp_path, calib):
    model, processor = offloaded(tmp_path / "offload")
    with pytest.raises(ShortLVLMError, match=r"taylor needs gradients.*offload"):
        score(model, processor, scorer=TaylorPlus(), calibration=calib)


def test_cli_prune_with_disk_offload_writes_the_same_checkpoint(tmp_path, capsys):
    from safetensors.torch import load_file

    from shortlvlm.cli import main

    args = ["prune", "toy", "--ratio", "0.25", "--num-samples", str(CALIB)]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main([*args, "--device-map", "auto", "--max-memory", "cpu=2MiB", "--offload-folder",
                 str(tmp_path / "offload"), "--out", str(tmp_path / "offloaded")]) == 0
    assert "on disk" in capsys.readouterr().err  # accelerate really offloaded weights to disk
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    offloaded_weights = load_file(tmp_path / "offloaded" / "model.safetensors")
    assert plain.keys() == offloaded_weights.keys()
    assert all(torch.equal(plain[k], offloaded_weights[k]) for k in plain)
    capsys.readouterr()
    assert main([*args, "--max-memory", "cpu=2MiB", "--out", str(tmp_path / "x")]) == 2
    assert "need --device-map auto" in capsys.readouterr().err


def test_input_device_without_get_input_embeddings():
    class NoEmbeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.meta = torch.nn.Linear(2, 2, device="meta")
            self.real = torch.nn.Linear(2, 2)

        def get_input_embeddings(self):
            raise NotImplementedError

    assert input_device(NoEmbeddings()) == torch.device("cpu")  # the first non-meta parameter
