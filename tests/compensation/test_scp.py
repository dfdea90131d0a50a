"""SCP: the streamed subspace, the weight edit, the fitted alpha, and the refusals."""

from __future__ import annotations

import pytest
import torch

from shortlvlm import get_adapter
from shortlvlm.capture import batch_from_inputs, capture
from shortlvlm.compensation import (
    SCP,
    CompensationError,
    GapStatistics,
    compensate,
    edit_writer,
    removed_runs,
    top_subspace,
)
from shortlvlm.importance import TIS
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model
from tests.references import TEMPLATE, eager_llava, llava_rows, naive_important, right_padded, shared_prefix


def float64_llava(num_layers=6):
    model = tiny_model("llava", num_layers).double()
    inputs = tiny_inputs(model.config, batch_size=3)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])  # see tests/test_importance.py
    adapter = get_adapter(model)
    return model, adapter, batch_from_inputs(adapter, inputs), inputs


def projector(basis):
    return basis @ basis.T


def test_removed_runs_pair_each_run_with_the_kept_layer_below():
    runs = removed_runs([7, 0, 1, 4, 5, 9])
    assert [(r.layers, r.below) for r in runs] == [([0, 1], None), ([4, 5], 3), ([7], 6), ([9], 8)]


def test_streamed_subspace_equals_svd_of_stacked_gaps():
    model, adapter, batch, inputs = float64_llava()
    runs = removed_runs([2, 3])
    stats = GapStatistics(runs, importance=None, fit=False, dim=model.config.text_config.hidden_size)
    capture(model, adapter, [batch, batch], stats)
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    gap = (states[4] - states[2])[batch.valid]  # output of layer 3 minus output of layer 1
    stacked = torch.cat([gap, gap])
    assert stats.tokens[1] == stacked.shape[0]
    torch.testing.assert_close(stats.hth[1], stacked.T @ stacked, rtol=1e-10, atol=1e-10)
    for rank in (1, 4, 8):
        basis, _ = top_subspace(stats.hth[1], rank)
        reference = torch.linalg.svd(stacked, full_matrices=False).Vh[:rank].T
        assert basis.shape == reference.shape
        assert torch.linalg.matrix_norm(projector(basis) - projector(reference)) < 1e-8


def test_weight_edit_equals_the_matrix_formula():
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 8, bias=True).double()
    weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
    basis = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64)).Q
    edit_writer(linear, basis, 0.7)
    transform = torch.eye(8, dtype=torch.float64) + 0.7 * basis @ basis.T
    torch.testing.assert_close(linear.weight.detach(), transform @ weight, rtol=0, atol=1e-14)
    torch.testing.assert_close(linear.bias.detach(), transform @ bias, rtol=0, atol=1e-14)


def test_edit_in_bfloat16_is_computed_in_float64_then_cast():
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 6, bias=False).to(torch.bfloat16)
    weight = linear.weight.detach().double()
    basis = torch.linalg.qr(torch.randn(6, 2, dtype=torch.float64)).Q
    edit_writer(linear, basis, 1.0)
    expected = ((torch.eye(6, dtype=torch.float64) + basis @ basis.T) @ weight).to(torch.bfloat16)
    assert linear.weight.dtype == torch.bfloat16
    assert torch.equal(linear.weight.detach(), expected)


def test_compensate_edits_only_the_layer_below_each_run_by_the_formula():
    model, adapter, batch, inputs = float64_llava()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = compensate(model, adapter, [batch], [2, 3], SCP(rank=4, alpha=1.0, tis=TIS(tokens="all")))
    assert report[0]["edited_layer"] == 1 and report[0]["rank"] == 4 and report[0]["alpha"] == 1.0
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed == ["model.language_model.layers.1.mlp.down_proj.weight"]
    with torch.no_grad():
        states = tiny_model("llava", 6).double()(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    gap = (states[4] - states[2])[batch.valid]
    basis = torch.linalg.svd(gap, full_matrices=False).Vh[:4].T
    expected = (torch.eye(basis.shape[0], dtype=torch.float64) + projector(basis)) @ before[changed[0]]
    torch.testing.assert_close(dict(model.named_parameters())[changed[0]].detach(), expected, rtol=1e-8, atol=1e-10)


def test_fitted_alpha_is_the_least_squares_solution():
    model, adapter, batch, inputs = float64_llava()
    writer = adapter.residual_writers(1)["mlp.down_proj"]
    written = []
    handle = writer.register_forward_hook(lambda mod, args, out: written.append(out.detach().clone()))
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    handle.remove()
    gap = (states[4] - states[2])[batch.valid]
    u = written[0][batch.valid]
    basis = torch.linalg.svd(gap, full_matrices=False).Vh[:3].T
    projected = u @ projector(basis)
    expected = float((gap * projected).sum() / (projected * projected).sum())
    report = compensate(model, adapter, [batch], [2, 3], SCP(rank=3, alpha="fit", tis=TIS(tokens="all")))
    assert report[0]["alpha"] == pytest.approx(expected, rel=1e-8)


def test_fitted_alpha_does_not_increase_the_gap_residual():
    model, _, batch, inputs = float64_llava()
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    target = states[4][batch.valid]

    def residual(alpha):
        edited = tiny_model("llava", 6).double()
        compensate(edited, get_adapter(edited), [batch], [2, 3], SCP(rank=3, alpha=alpha, tis=TIS(tokens="all")))
        with torch.no_grad():
            out = edited(**inputs, output_hidden_states=True, use_cache=False).hidden_states[2][batch.valid]
        return float(((target - out) ** 2).sum())

    assert residual("fit") <= residual(0.0) + 1e-9


def test_run_starting_at_layer_zero_is_left_alone_and_reported():
    model, adapter, batch, _ = float64_llava()
    before = [p.detach().clone() for p in model.parameters()]
    report = compensate(model, adapter, [batch], [0, 1], SCP(rank=2, tis=TIS(tokens="all")))
    assert report == [{"removed": [0, 1], "edited_layer": None, "reason": "run starts at layer 0: nothing below"}]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_rank_deficient_gap_uses_fewer_directions_and_says_so():
    model, adapter, batch, _ = float64_llava()
    batch.valid = torch.zeros_like(batch.valid)
    batch.valid[0, -2:] = True  # two tokens: H has rank <= 2
    report = compensate(model, adapter, [batch], [3], SCP(rank=8, tis=TIS(tokens="all")))
    assert report[0]["rank"] <= 2 and "rank" in report[0]["note"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gemma3_post_norm_writers_are_refused():
    model = tiny_model("gemma3", 6)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, tiny_inputs(model.config))
    with pytest.raises(CompensationError, match="compensation none"):
        compensate(model, adapter, [batch], [3])


@pytest.mark.parametrize(("options", "message"), [
    (lambda: SCP(rank=0), "rank"), (lambda: SCP(alpha="big"), "alpha"), (lambda: SCP(writers="qkv"), "writers"),
    (lambda: SCP(tis=TIS(tokens="some")), "tokens"),
])
def test_bad_parameters_are_refused(options, message):
    model, adapter, batch, _ = float64_llava()
    with pytest.raises(CompensationError, match=message):
        compensate(model, adapter, [batch], [3], options())


def test_default_scp_measures_the_gap_on_tis_important_tokens():
    """The default path, SCP() with TIS's important tokens, against a naive float64 reference: the important
    tokens rebuilt from output_attentions (TIS over every layer, top half of each modality, the shared
    template left out), the gap stacked on those tokens only, its subspace from an SVD."""
    model = eager_llava()
    adapter = get_adapter(model)
    image_id = model.config.image_token_id
    groups = [llava_rows(model, [2, 1, 3], [6, 7, 5], seed=1), llava_rows(model, [2, 4], [9, 7], seed=2)]
    batches = [right_padded(model, group) for group in groups]
    assert all(batch.valid.all() for batch in batches)  # equal rows per batch: float64 without padding
    template = shared_prefix([s for group in groups for s in group], image_id)
    assert template == len(TEMPLATE)
    gaps, important, real = [], 0, 0
    with torch.no_grad():
        for batch in batches:
            out = model(**batch.inputs, output_attentions=True, output_hidden_states=True, use_cache=False)
            mask = naive_important(out, batch.inputs["input_ids"], image_id, template)
            gaps.append((out.hidden_states[4] - out.hidden_states[2])[mask])  # after layer 3 minus after layer 1
            important, real = important + int(mask.sum()), real + int(batch.valid.sum())
    stacked = torch.cat(gaps)
    # ceil(half) of the 16 image tokens and of the text words after the template, per row; not all 141 tokens
    assert (important, real) == (3 * (8 + 4) + 2 * (8 + 6), 3 * 27 + 2 * 30)

    measured = SCP().measure(model, adapter, batches, [2, 3])
    assert int(measured["tokens.1"]) == important
    torch.testing.assert_close(measured["hth.1"], stacked.T @ stacked, rtol=1e-10, atol=1e-10)

    writer = "model.language_model.layers.1.mlp.down_proj.weight"
    weight = dict(model.named_parameters())[writer].detach().clone()
    report = compensate(model, adapter, batches, [2, 3])  # the default SCP
    assert report[0]["tokens"] == important and report[0]["rank"] == SCP().rank
    basis = torch.linalg.svd(stacked, full_matrices=False).Vh[:SCP().rank].T
    expected = (torch.eye(basis.shape[0], dtype=torch.float64) + projector(basis)) @ weight
    torch.testing.assert_close(dict(model.named_parameters())[writer].detach(), expected, rtol=1e-8, atol=1e-10)


def test_top_subspace_drops_directions_below_the_relative_tolerance_at_any_scale():
    """A rank-2 H^T H (plus round-off) keeps 2 directions whatever its scale; the cut is relative to the largest
    eigenvalue."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(30, 2, generator=generator, dtype=torch.float64) @ torch.randn(2, 6, generator=generator,
                                                                                     dtype=torch.float64)
    for scale in (1e-6, 1.0, 1e6):
        basis, values = top_subspace((h * scale).T @ (h * scale), rank=4)
        assert basis.shape == (6, 2) and values.shape == (2,)
        assert torch.all(values[:-1] >= values[1:])
    basis, values = top_subspace(h.T @ h + 1e-3 * torch.eye(6, dtype=torch.float64), rank=4)
    assert basis.shape == (6, 4)  # full rank: the rank option caps it


@pytest.mark.parametrize("writers", ["mlp", "attn", "both"])
def test_normalized_fit_statistics_equal_the_stacked_formula(writers):
    """normalize=True weighs each token's gap and writer output by 1/|X^r_t|; "both" sums the two writers'
    outputs; the accumulators equal H^T H, U^T H and U^T U built from hooks and hidden states."""
    from shortlvlm.compensation.scp import measure_gaps

    model, adapter, batch, inputs = float64_llava()
    names = {"mlp": ["mlp.down_proj"], "attn": ["self_attn.o_proj"],
             "both": ["self_attn.o_proj", "mlp.down_proj"]}[writers]
    written = []
    hooks = [adapter.residual_writers(1)[name].register_forward_hook(lambda mod, args, out: written.append(out))
             for name in names]
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    for hook in hooks:
        hook.remove()
    below = states[2][batch.valid]
    scale = 1 / below.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # some tiny-model streams are exactly 0
    gap = (states[4][batch.valid] - below) * scale
    u = sum(w[batch.valid] for w in written) * scale
    scp = SCP(alpha="fit", writers=writers, normalize=True, tis=TIS(tokens="all"))
    measured = measure_gaps(model, adapter, [batch], [2, 3], scp)
    torch.testing.assert_close(measured["hth.1"], gap.T @ gap, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(measured["cross.1"], u.T @ gap, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(measured["gram.1"], u.T @ u, rtol=1e-10, atol=1e-12)


def test_compensations_are_found_by_name_with_their_defaults():
    from shortlvlm.compensation import COMPENSATION_NAMES, LstSq, compensation_named

    assert compensation_named("none") is None
    assert compensation_named("scp") == SCP() and compensation_named("lstsq") == LstSq()
    assert all(compensation_named(name) is not None for name in COMPENSATION_NAMES if name != "none")
    with pytest.raises(CompensationError, match="unknown compensation 'nope'; choose one of: none, scp"):
        compensation_named("nope")


def test_the_reported_energy_is_the_top_subspace_share_of_the_gap():
    """energy_captured = sum of the top-k squared singular values of the stacked gap H over |H|_F^2."""
    model, adapter, batch, inputs = float64_llava()
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    gap = (states[4] - states[2])[batch.valid]
    singular = torch.linalg.svdvals(gap)
    (entry,) = compensate(model, adapter, [batch], [2, 3], SCP(rank=3, alpha=1.0, tis=TIS(tokens="all")))
    expected = float((singular[:3] ** 2).sum() / (singular**2).sum())
    assert 0 < expected < 1
    assert entry["energy_captured"] == pytest.approx(expected, abs=2e-6)
    assert entry["rank"] == 3
