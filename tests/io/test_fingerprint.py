"""The weights' sampled fingerprint: the same weights hash alike however they are loaded; others do not."""

from __future__ import annotations

import torch

from shortlvlm import load
from shortlvlm.io.fingerprint import weights_sample_fingerprint
from shortlvlm.io.load import load_skeleton
from shortlvlm.io.offload import has_offloaded_weights, read_weight, write_weight


def test_the_same_weights_hash_alike_in_any_dtype_and_placement(tmp_path):
    reference = weights_sample_fingerprint(load("toy", dtype=torch.float32)[0])
    assert reference is not None and len(reference) == 16
    assert weights_sample_fingerprint(load("toy", dtype=torch.bfloat16)[0]) == reference
    layerwise, _ = load("toy", dtype=torch.float32, layerwise=True)  # decoder layers read from the file
    assert has_offloaded_weights(layerwise) and weights_sample_fingerprint(layerwise) == reference
    offloaded, _ = load("toy", dtype=torch.float32, device_map="auto", max_memory={"cpu": "4MB"},
                        offload_folder=str(tmp_path))
    assert has_offloaded_weights(offloaded) and weights_sample_fingerprint(offloaded) == reference
    assert weights_sample_fingerprint(load_skeleton("toy")) is None  # no weights to sample


def test_an_edit_at_a_sampled_end_changes_the_hash_offloaded_or_not():
    model, _ = load("toy", dtype=torch.float32)
    reference = weights_sample_fingerprint(model)
    with torch.no_grad():
        model.get_input_embeddings().weight[-1, -1] += 0.5
    assert weights_sample_fingerprint(model) != reference

    layerwise, _ = load("toy", dtype=torch.float32, layerwise=True)
    projection = layerwise.model.language_model.layers[3].mlp.down_proj
    write_weight(projection, "weight", read_weight(projection, "weight") * 2)
    assert weights_sample_fingerprint(layerwise) not in (None, reference)
