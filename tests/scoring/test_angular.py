"""Gromov et al.'s angular distance and best contiguous block, against a brute-force re-computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.scoring.test_block_influence import make_identity

from shortlvlm.capture import capture
from shortlvlm.scoring import get_scorer
from shortlvlm.scoring.angular import BoundaryDistance, best_blocks


def boundary_states(context) -> torch.Tensor:
    """[B, L+1, d] last-token residual stream: stored hidden states 0..L-1 plus the last layer's output."""
    batch = context.batches[0]
    out = {}
    handle = context.adapter.layers[-1].register_forward_hook(
        lambda module, args, output: out.setdefault("h", output if torch.is_tensor(output) else output[0]))
    with torch.no_grad():
        hidden = context.model(**batch.inputs, output_hidden_states=True, use_cache=False).hidden_states
    handle.remove()
    states = [*hidden[: context.adapter.num_layers], out["h"]]
    return torch.stack([h[:, -1] for h in states], dim=1)  # left padding: the last token is real


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "gemma3"])
def test_distances_equal_the_brute_force_computation(make_context, model_type):
    context = make_context(model_type, dtype=torch.float64, answers=False)
    states = boundary_states(context)
    collector = BoundaryDistance(context.adapter.num_layers)
    capture(context.model, context.adapter, context.batches, collector)
    got = collector.distances()
    size = states.shape[1]
    for i in range(size):
        for j in range(size):
            cosine = F.cosine_similarity(states[:, i], states[:, j], dim=-1).clamp(-1, 1)
            expected = float((torch.arccos(cosine) / math.pi).mean())
            assert float(got[i, j]) == pytest.approx(expected, abs=1e-6), (i, j)


def test_the_chosen_block_is_the_brute_force_minimum(make_context):
    context = make_context(answers=False)
    ranking = get_scorer("angular").rank(context, 3)
    distance = BoundaryDistance(6)
    capture(context.model, context.adapter, context.batches, distance)
    matrix = distance.distances()
    for size in range(1, 6):
        best = min(range(0, 7 - size), key=lambda start: float(matrix[start, start + size]))
        assert ranking.details["removal_sets"][str(size)] == list(range(best, best + size))
    assert sorted(map(int, ranking.details["removal_sets"])) == [1, 2, 3, 4, 5]  # a block leaves a layer
    assert ranking.order[:3] == ranking.details["removal_sets"]["3"]
    # after the block, every other layer by its own input/output distance
    single = [float(matrix[i, i + 1]) for i in range(6)]
    assert ranking.scores == pytest.approx(single)
    assert sorted(ranking.order) == list(range(6))
    assert ranking.order[3:] == sorted(ranking.order[3:], key=lambda i: (single[i], i))


def test_identity_layers_form_the_chosen_block(make_context):
    context = make_context(answers=False)
    make_identity(context.adapter, 2)
    make_identity(context.adapter, 3)
    ranking = get_scorer("angular").rank(context, 2)
    assert ranking.details["removal_sets"]["2"] == [2, 3]
    assert ranking.details["block_distance"]["2"] == pytest.approx(0.0, abs=1e-3)


def test_blocks_never_include_protected_layers():
    matrix = torch.rand(7, 7)
    blocks = best_blocks(matrix, candidates=[2, 3, 4, 5], max_size=6)
    assert set(blocks) == {1, 2, 3, 4}
    assert all(set(block) <= {2, 3, 4, 5} for block in blocks.values())
