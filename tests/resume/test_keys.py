"""Resume keys name what a saved result depends on: here, an evaluation's answers."""

from __future__ import annotations

import os
import shutil

import torch

from shortlvlm import load
from shortlvlm.eval.generate import generation_settings
from shortlvlm.resume.keys import answers_key
from shortlvlm.testbeds.toy import TOY_CHECKPOINT


def key(model, name, **changes) -> dict:
    settings = {"bench": "shapes", "data": None, "limit": 32, "batch_size": 16,
                "generation": generation_settings()}
    return answers_key(model, name, **{**settings, **changes})


def test_the_answers_key_changes_with_batching_generation_weights_and_dtype(tmp_path):
    model_dir = shutil.copytree(TOY_CHECKPOINT, tmp_path / "model")
    model, _ = load(str(model_dir))
    base = key(model, str(model_dir))
    assert key(model, str(model_dir)) == base and base["weights"] is not None
    assert key(model, str(model_dir), batch_size=8) != base  # padding changes what is generated
    assert key(model, str(model_dir), generation=generation_settings(max_new_tokens=16)) != base
    assert generation_settings() != generation_settings(max_new_tokens=16)
    assert key(model.to(torch.bfloat16), str(model_dir)) != base
    model.to(torch.float32)
    weights = next(model_dir.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as if rewritten in place
    assert key(model, str(model_dir)) != base
