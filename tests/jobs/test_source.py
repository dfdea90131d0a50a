"""Loading options: the device map is checked against this machine before any weights load."""

from __future__ import annotations

import pytest
import torch

from shortlvlm.cli import main
from shortlvlm.errors import ShortLVLMError
from shortlvlm.jobs.source import Loading


@pytest.mark.parametrize("device_map", ["cuda", "cuda:0"])
def test_a_cuda_device_map_without_cuda_is_refused_in_one_line(monkeypatch, capsys, tmp_path, device_map):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ShortLVLMError, match=r"names a CUDA device, but this machine has none visible"):
        Loading(device_map=device_map)
    for argv in (
        ["prune", "toy", "--layers", "1", "--out", str(tmp_path / "x")],
        ["eval", "toy", "--bench", "shapes", "--limit", "2", "--out", str(tmp_path / "r.json")],
        ["bench", "toy", "--out", str(tmp_path / "b.json")],
        ["prune", "toy", "--layers", "1", "--layerwise", "--out", str(tmp_path / "y")],
    ):
        code = main([*argv, "--device-map", device_map])
        err = capsys.readouterr().err
        assert code == 2 and err.count("shortlvlm: error:") == 1 and "Traceback" not in err, argv
        assert "none visible" in err
    assert list(tmp_path.iterdir()) == []


def test_a_device_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert Loading(device_map="cuda:1").device_map == "cuda:1"
    with pytest.raises(ShortLVLMError, match=r"names CUDA device 2, but only 2 are visible \(0\.\.1\)"):
        Loading(device_map="cuda:2")


@pytest.mark.parametrize("device_map", [None, "auto", "balanced", "sequential", "cpu"])
def test_placement_words_and_the_cpu_are_accepted(device_map):
    assert Loading(device_map=device_map).device_map == device_map
