"""The layer-by-layer pass (shortlvlm.capture.layerwise) gives exactly what the whole-model pass gives.

Two settings: tiny models of every supported architecture with the pass forced on in memory
(`use_layerwise`), and the toy loaded with `load(..., layerwise=True)`, whose decoder layers stay
in its safetensors file (accelerate disk offload) and are read one at a time.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from shortlvlm import get_adapter
from shortlvlm.capture import CaptureError, Collector, batch_from_inputs, capture
from shortlvlm.compensation import (
    SCP,
    Cosine,
    LaCo,
    LstSq,
    Magnitude,
    measure_bridges,
    measure_gaps,
    measure_magnitudes,
)
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.importance import TIS
from shortlvlm.io.load import load
from shortlvlm.io.offload import has_offloaded_weights, is_offloaded
from shortlvlm.io.placement import Layerwise, layerwise_options, use_layerwise
from shortlvlm.pruning import prune, score
from shortlvlm.scoring import ScoringContext, get_scorer
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES, tiny_inputs, tiny_model
from shortlvlm.testbeds.toy import TOY_CHECKPOINT

CALIB = 8


@pytest.fixture(scope="module")
def calib():
    return toy_calibration(CALIB)


def count_prefix_passes(monkeypatch) -> list[int]:
    """Spy on the layer-by-layer pass: one entry per recorded batch."""
    from shortlvlm.capture import layerwise

    calls: list[int] = []
    original = layerwise.record_layer_inputs

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(layerwise, "record_layer_inputs", spy)
    return calls


def tiny_context(model_type: str) -> ScoringContext:
    model = tiny_model(model_type, num_layers=5)
    adapter = get_adapter(model)
    batches = [batch_from_inputs(adapter, tiny_inputs(model.config, seed=seed)) for seed in (0, 1)]
    return ScoringContext(model, adapter, batches)


def ranked(context: ScoringContext, method: str, **params):
    ranking = get_scorer(method, **params).rank(context, 2)
    return ranking.scores, ranking.order, ranking.details


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_layerwise_tis_cosine_equals_whole_model_on_every_architecture(model_type, monkeypatch):
    context = tiny_context(model_type)
    expected = ranked(context, "tis-cosine")
    calls = count_prefix_passes(monkeypatch)
    use_layerwise(context.model)
    actual = ranked(context, "tis-cosine")
    assert len(calls) == len(context.batches)  # the layer-by-layer pass really ran
    assert actual == expected  # bit-identical scores, order and details (padding on row 0 included)


@pytest.mark.parametrize("method,params", [("tis-cosine", {"iterative": True}),
                                           ("tis-cosine", {"tis": TIS(tokens="all")}),
                                           ("block-influence", {}), ("angular", {})])
def test_layerwise_other_scorers_equal_whole_model(method, params, monkeypatch):
    context = tiny_context("qwen3_vl")  # deepstack: the model adds features between layers
    expected = ranked(context, method, **params)
    calls = count_prefix_passes(monkeypatch)
    use_layerwise(context.model)
    assert ranked(context, method, **params) == expected
    assert calls


@pytest.mark.parametrize("model_type", ["llava", "qwen3_vl"])
@pytest.mark.parametrize("fit", [False, True])
def test_layerwise_scp_statistics_equal_whole_model(model_type, fit):
    context = tiny_context(model_type)
    model, adapter, batches = context.model, context.adapter, context.batches
    scp = SCP(alpha="fit" if fit else 1.0, writers="mlp", tis=TIS(tokens="important", top_p=0.5, layers="all"),
              normalize=True)
    expected = measure_gaps(model, adapter, batches, [1, 2, 4], scp)
    use_layerwise(model)
    actual = measure_gaps(model, adapter, batches, [1, 2, 4], scp)
    assert expected.keys() == actual.keys() and len(expected) == (4 if fit else 2) * 2
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_qwen3_vl_deepstack_is_replayed_not_ignored():
    """Qwen3-VL adds visual features after its first layers; dropping them would change the scores."""
    context = tiny_context("qwen3_vl")
    assert context.model.config.vision_config.deepstack_visual_indexes  # the tiny model has deepstack
    from shortlvlm.capture import layerwise

    model, adapter = context.model, context.adapter
    batch = context.batches[0]
    _, recording = layerwise.record_layer_inputs(model, adapter.layers, {**batch.inputs, "use_cache": False}, set())
    assert recording.deltas and all(torch.count_nonzero(d) for d in recording.deltas.values())
    image = batch.image
    for delta in recording.deltas.values():  # added at image positions only
        assert not torch.count_nonzero(delta[~image])


def test_a_model_that_transforms_hidden_states_between_layers_is_refused():
    context = tiny_context("llava")
    layer = context.adapter.layers[1]
    # Multiplying the stream between layers is not a fixed additive term: the replay cannot reproduce it.
    layer.register_forward_hook(lambda module, args, output: output * 2)
    with pytest.raises(CaptureError, match=r"between decoder layers 1 and 2.*without --layerwise"):
        capture(context.model, context.adapter, context.batches, NoStateCollector(), layerwise=True)


class NoStateCollector(Collector):
    batch_state = ()  # declares that it keeps no per-batch state


def test_a_collector_without_declared_batch_state_is_refused():
    context = tiny_context("llava")
    with pytest.raises(CaptureError, match=r"does not declare its per-batch state"):
        capture(context.model, context.adapter, context.batches, Collector(), layerwise=True)


def test_layerwise_false_forces_the_whole_model_pass(monkeypatch):
    context = tiny_context("llava")
    use_layerwise(context.model)
    calls = count_prefix_passes(monkeypatch)
    capture(context.model, context.adapter, context.batches, NoStateCollector(), layerwise=False)
    assert not calls


# --- the toy loaded layer by layer: decoder layers read from its safetensors file one at a time ----------------


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def layerwise_toy():
    model, processor = load("toy", dtype=torch.float32, layerwise=True)
    adapter = get_adapter(model)
    assert layerwise_options(model) is not None
    assert all(is_offloaded(layer.mlp.down_proj) for layer in adapter.layers)
    assert all(p.device.type == "meta" for layer in adapter.layers for p in layer.parameters())
    assert model.get_output_embeddings().weight.device.type == "meta"  # the LM head is not needed to calibrate
    assert model.get_input_embeddings().weight.device.type == "cpu"  # the embeddings are loaded
    return model, processor


def test_layerwise_load_keeps_one_decoder_layer_in_memory_at_a_time(calib, monkeypatch):
    model, processor = layerwise_toy()
    adapter = get_adapter(model)
    resident: list[int] = []

    def count(module, args, kwargs):
        resident.append(sum(any(p.device.type != "meta" for p in layer.parameters()) for layer in adapter.layers))

    for layer in adapter.layers:
        layer.register_forward_pre_hook(count, with_kwargs=True)
    score(model, processor, calibration=calib)
    assert resident and max(resident) == 1  # each layer call saw exactly one decoder layer's weights loaded
    assert all(p.device.type == "meta" for layer in adapter.layers for p in layer.parameters())  # released


@pytest.mark.parametrize("method", ["tis-cosine", "block-influence", "angular"])
def test_layerwise_load_scores_equal_the_in_memory_scores(calib, method):
    reference = score(*load("toy", dtype=torch.float32), scorer=get_scorer(method), calibration=calib)
    plan = score(*layerwise_toy(), scorer=get_scorer(method), calibration=calib)
    assert plan.layer_scores == reference.layer_scores
    assert plan.params["removal_order"] == reference.params["removal_order"]


def test_layerwise_activations_in_a_folder_equal_and_are_removed(calib, tmp_path, monkeypatch):
    from shortlvlm.capture.activations import ActivationStore

    reference = score(*load("toy", dtype=torch.float32), calibration=calib)
    model, processor = load("toy", dtype=torch.float32, layerwise=Layerwise(activations_dir=str(tmp_path)))
    store = ActivationStore
    original_put, original_keep = store.put, store.keep_inputs
    written: list[str] = []
    spilled: list[bool] = []

    def put(self, batch, hidden):
        original_put(self, batch, hidden)
        written.append(str(self.folder))

    def keep_inputs(self, batch, recording):
        original_keep(self, batch, recording)
        spilled.append((self.folder / f"{batch}-inputs.safetensors").is_file() and not recording.tensors)

    monkeypatch.setattr(store, "put", put)
    monkeypatch.setattr(store, "keep_inputs", keep_inputs)
    plan = score(model, processor, calibration=calib)
    assert written and all(w.startswith(str(tmp_path)) for w in written)  # the folder was used
    assert spilled and all(spilled)  # masks and position embeddings went there too, not CPU memory
    assert plan.layer_scores == reference.layer_scores
    assert list(tmp_path.iterdir()) == []  # scratch removed


@pytest.mark.parametrize("model_type", ["llava", "qwen3_vl"])
@pytest.mark.parametrize(("tokens", "streams"), [("all", "unpruned"), ("important", "unpruned"), ("all", "sequential")])
def test_layerwise_bridge_statistics_equal_whole_model(model_type, tokens, streams):
    context = tiny_context(model_type)
    model, adapter, batches = context.model, context.adapter, context.batches
    bridge = LstSq(tokens=tokens, streams=streams)
    expected = measure_bridges(model, adapter, batches, [1, 2, 4], bridge)
    use_layerwise(model)
    actual = measure_bridges(model, adapter, batches, [1, 2, 4], bridge)
    assert expected.keys() == actual.keys() and len(expected) == 2 * 5
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize("model_type", ["llava", "qwen3_vl"])
@pytest.mark.parametrize("tokens", ["all", "important"])
def test_layerwise_magnitude_statistics_equal_whole_model(model_type, tokens):
    context = tiny_context(model_type)
    model, adapter, batches = context.model, context.adapter, context.batches
    expected = measure_magnitudes(model, adapter, batches, [1, 2, 4], Magnitude(tokens=tokens))
    use_layerwise(model)
    actual = measure_magnitudes(model, adapter, batches, [1, 2, 4], Magnitude(tokens=tokens))
    assert expected.keys() == actual.keys() and len(expected) == 2 * 3
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize("compensation", [SCP(alpha=1.0), SCP(alpha="fit"), LstSq(), Cosine(steps=20), Magnitude(),
                                          LaCo()],
                         ids=["scp", "scp-fit", "lstsq", "cosine", "magnitude", "laco"])
def test_layerwise_prune_writes_the_in_memory_checkpoint(calib, tmp_path, compensation):
    from shortlvlm.jobs.checkpoint import write_checkpoint

    source = file_digest(TOY_CHECKPOINT / "model.safetensors")
    model, processor = layerwise_toy()
    model, plan = prune(model, processor, 0.25, compensation=compensation, calibration=calib)
    assert has_offloaded_weights(model)
    reference, reference_plan = prune(*load("toy", dtype=torch.float32), 0.25, compensation=compensation,
                                      calibration=calib)
    assert plan.removed_layers == reference_plan.removed_layers
    assert plan.params["compensation_report"] == reference_plan.params["compensation_report"]
    out, verified = write_checkpoint(model, processor, plan, tmp_path / "out")
    assert verified is not None and verified.max_abs_logit_diff == 0.0
    saved, _ = load(out, dtype=torch.float32)
    expected, actual = reference.state_dict(), saved.state_dict()
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name
    assert file_digest(TOY_CHECKPOINT / "model.safetensors") == source  # the SCP edit never touched the source


def test_layerwise_laco_walk_equals_the_in_memory_walk_and_puts_the_weights_back(calib):
    """The walk writes each tried merge into the kept layer through the offload map and reads it back: on the toy
    loaded layer by layer it measures exactly what it measures in memory, and every weight reads as before."""
    from shortlvlm.compensation.laco import layer_parameters
    from shortlvlm.io.offload import read_weight
    from shortlvlm.scoring import LaCoWalk

    source = file_digest(TOY_CHECKPOINT / "model.safetensors")
    walk = LaCoWalk(merge_size=2, threshold=0.995, threshold_step=0.2, samples=4)  # rejects merges, then lowers
    reference = score(*load("toy", dtype=torch.float32), scorer=walk, calibration=calib, num_remove=2)
    model, processor = layerwise_toy()
    adapter = get_adapter(model)

    def weights() -> dict[str, torch.Tensor]:
        return {f"{i}.{name}": read_weight(module, local).clone() for i, layer in enumerate(adapter.layers)
                for name, (module, local) in layer_parameters(layer).items()}

    before = weights()
    plan = score(model, processor, scorer=walk, calibration=calib, num_remove=2)
    assert plan.params["removal_order"] == reference.params["removal_order"] and len(plan.params["removal_order"]) == 2
    assert plan.layer_scores == reference.layer_scores
    assert plan.params["merges"] == reference.params["merges"] and plan.params["walks"] >= 2
    assert plan.params["merges_tried"] > len(plan.params["merges"])  # rejected merges were written and undone
    after = weights()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert file_digest(TOY_CHECKPOINT / "model.safetensors") == source


def test_verify_reloads_an_offloaded_model_with_its_layers_on_disk(calib, tmp_path, monkeypatch):
    """The reload check must not pull a model that did not fit in memory fully into memory."""
    from shortlvlm.io import verify as checkpoint
    from shortlvlm.jobs.checkpoint import write_checkpoint

    reloaded_maps = []
    original = checkpoint._reload

    def spy(model, out, trust_remote_code):
        reloaded = original(model, out, trust_remote_code)
        reloaded_maps.append(getattr(reloaded, "hf_device_map", None))
        return reloaded

    monkeypatch.setattr(checkpoint, "_reload", spy)
    model, processor = layerwise_toy()
    model, plan = prune(model, processor, 0.25, compensation=None, calibration=calib)
    write_checkpoint(model, processor, plan, tmp_path / "out")
    (device_map,) = reloaded_maps
    on_disk = sorted(name for name, device in device_map.items() if device == "disk")
    assert on_disk == sorted([f"model.language_model.layers.{i}" for i in range(12)]
                             + ["model.vision_tower.encoder.layers.0", "model.vision_tower.encoder.layers.1",
                                "lm_head"])


def test_cli_prune_layerwise_writes_the_same_checkpoint(tmp_path, capsys):
    from safetensors.torch import load_file

    from shortlvlm.cli import main

    args = ["prune", "toy", "--ratio", "0.25", "--num-samples", str(CALIB)]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    (tmp_path / "acts").mkdir()
    capsys.readouterr()
    assert main([*args, "--layerwise", "--activations-dir", str(tmp_path / "acts"),
                 "--out", str(tmp_path / "layerwise")]) == 0
    assert "19 module group(s) on disk" in capsys.readouterr().err  # 16 decoder + 2 vision layers + LM head
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    layerwise = load_file(tmp_path / "layerwise" / "model.safetensors")
    assert plain.keys() == layerwise.keys()
    assert all(torch.equal(plain[k], layerwise[k]) for k in plain)


def test_layerwise_refuses_a_device_map_it_cannot_honour():
    from shortlvlm.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"one device"):
        load("toy", layerwise=True, device_map="auto")


@pytest.mark.parametrize("method", ["ppl", "sleb"])
def test_loss_scorers_run_whole_model_forwards_on_a_layerwise_loaded_model(calib, method):
    """ppl and sleb run whole-model forwards; on a layer-by-layer model accelerate loads each layer for them."""
    model, processor = layerwise_toy()
    adapter = get_adapter(model)
    batches = encode_calibration(calib[:2], processor, adapter, batch_size=2)
    reference_model, _ = load("toy", dtype=torch.float32)
    reference = get_scorer(method).rank(ScoringContext(reference_model, get_adapter(reference_model), batches), 1)
    actual = get_scorer(method).rank(ScoringContext(model, adapter, batches), 1)
    assert actual.order == reference.order
    assert actual.scores == pytest.approx(reference.scores, rel=1e-6)


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_layerwise_load_of_every_architecture_streams_its_blocks_and_scores_the_same(model_type, tmp_path):
    """Saved tiny model loaded with layers (decoder and vision) and untied LM head left on disk."""
    from shortlvlm.io.placement import untied_head

    context = tiny_context(model_type)
    context.model.save_pretrained(tmp_path)
    expected = ranked(context, "tis-cosine")
    model, _ = load(tmp_path, dtype=torch.float32, layerwise=True)
    adapter = get_adapter(model)
    disk = {name for name, device in model.hf_device_map.items() if device == "disk"}
    assert {f"{adapter.layers_path}.{i}" for i in range(adapter.num_layers)} <= disk
    assert len(disk) > adapter.num_layers  # the vision encoder's blocks are streamed as well
    assert set(untied_head(model)) <= disk
    actual = ranked(ScoringContext(model, adapter, context.batches), "tis-cosine")
    assert actual == expected


@pytest.mark.parametrize("model_type", ["gemma3", "qwen3_vl"])
def test_layerwise_with_an_activation_folder_equals_whole_model(model_type, tmp_path):
    """Per-layer masks (Gemma 3), M-RoPE and deepstack (Qwen3-VL) survive the round trip through files."""
    context = tiny_context(model_type)
    expected = ranked(context, "tis-cosine")
    use_layerwise(context.model, Layerwise(activations_dir=str(tmp_path)))
    assert ranked(context, "tis-cosine") == expected
    assert list(tmp_path.iterdir()) == []
