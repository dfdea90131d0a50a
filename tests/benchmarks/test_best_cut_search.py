"""benchmarks/best_cut_search.py's SCP gap statistics against a direct float64 computation."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.mark.parametrize("removed, below", [([4, 5], 3), ([9], 8)])
def test_gap_residual_matches_a_direct_computation(removed, below):
    from best_cut_search import gap_diagnostics

    from shortlvlm import get_adapter, load
    from shortlvlm.compensation import top_subspace
    from shortlvlm.data.calibration import load_calibration
    from shortlvlm.data.encode import encode_calibration
    from shortlvlm.importance import TIS

    model, processor = load("toy")
    model.float()
    adapter = get_adapter(model)
    batches = encode_calibration(load_calibration(None, model_name="toy", limit=16), processor, adapter)
    row = gap_diagnostics(model, batches, removed, tis=TIS(tokens="all", skip_template=False))[0]
    gaps, written, store = [], [], {}
    writer = list(adapter.residual_writers(below).values())[-1]  # the MLP writer SCP edits
    handle = writer.register_forward_hook(lambda module, args, output: store.__setitem__("u", output))
    with torch.no_grad():
        for batch in batches:
            states = model(**batch.inputs, output_hidden_states=True).hidden_states  # [i + 1]: after layer i
            mask = batch.at_layers().valid
            gaps.append((states[removed[-1] + 1] - states[below + 1])[mask].double())
            written.append(store["u"][mask].double())
    handle.remove()
    gap, out = torch.cat(gaps), torch.cat(written)
    basis, values = top_subspace(gap.T @ gap, 8)
    projector = basis @ basis.T
    for alpha, key in ((1.0, "residual_alpha_1"), (row["fitted_alpha"], "residual_fitted")):
        direct = ((gap - alpha * out @ projector) ** 2).sum() / (gap ** 2).sum()
        assert row[key] == pytest.approx(direct.item(), rel=1e-6)
    # the fitted alpha minimises the residual along alpha
    for alpha in (row["fitted_alpha"] * 0.9, row["fitted_alpha"] * 1.1):
        assert ((gap - alpha * out @ projector) ** 2).sum() / (gap ** 2).sum() > row["residual_fitted"]
    assert row["tokens"] == gap.shape[0]
    assert row["top_k_energy_share"] == pytest.approx((values.sum() / torch.trace(gap.T @ gap)).item(), rel=1e-6)
