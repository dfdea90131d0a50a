"""ShortGPT's Block Influence against a re-computation from stored hidden states."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shortlvlm.scoring import get_scorer
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES


def make_identity(adapter, index: int) -> None:
    """Zero the layer's residual writers: its output equals its input."""
    with torch.no_grad():
        for writer in adapter.residual_writers(index).values():
            writer.weight.zero_()
            if writer.bias is not None:
                writer.bias.zero_()


# Qwen3-VL's stored hidden states omit its deepstack additions, so they are not the layers' inputs.
@pytest.mark.parametrize("model_type", [t for t in TINY_MODEL_TYPES if t != "qwen3_vl"])
def test_block_influence_equals_pooled_cosine_of_stored_hidden_states(make_context, model_type):
    context = make_context(model_type, dtype=torch.float64, answers=False)
    batch = context.batches[0]
    with torch.no_grad():
        hidden = context.model(**batch.inputs, output_hidden_states=True, use_cache=False).hidden_states
    real = batch.inputs["attention_mask"].bool()
    ranking = get_scorer("block-influence").rank(context, 2)
    # The last stored state is after the final norm: compare every layer but the last.
    for layer in range(context.adapter.num_layers - 1):
        cosine = F.cosine_similarity(hidden[layer], hidden[layer + 1], dim=-1)
        expected = float((1 - cosine[real]).mean())
        assert ranking.scores[layer] == pytest.approx(expected, rel=1e-9, abs=1e-12), layer
    assert 0 <= ranking.scores[-1] <= 2


def test_an_identity_layer_has_zero_influence_and_goes_first(make_context):
    context = make_context(answers=False)
    make_identity(context.adapter, 3)
    ranking = get_scorer("block-influence").rank(context, 1)
    assert ranking.scores[3] == pytest.approx(0.0, abs=1e-6)
    assert ranking.order[0] == 3
    ordered = [ranking.scores[i] for i in ranking.order]
    assert ordered == sorted(ordered)


def test_padding_does_not_count(make_context):
    context = make_context(answers=False)
    padded_row = get_scorer("block-influence").rank(context, 1).scores
    batch = context.batches[0]
    batch.inputs["input_ids"][0, :3] = 7  # change what sits under the padding
    assert get_scorer("block-influence").rank(context, 1).scores == pytest.approx(padded_row, rel=1e-6)
