"""The toy model and processor are a real LLaVA that the Auto classes load offline."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from shortlvlm.testbeds.toy.data import make_split
from shortlvlm.testbeds.toy.model import build_model, build_processor
from shortlvlm.testbeds.toy.train import VisionStandardizer, encode_batch, fold_standardizer


def test_processor_and_model_round_trip_through_auto_classes(tmp_path):
    processor, model = build_processor(), build_model(num_layers=2).eval()
    processor.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    samples = make_split("test", 3)
    batch = encode_batch(processor, samples, with_answers=False)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    again = encode_batch(reloaded, samples, with_answers=False)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert (batch["input_ids"] == model.config.image_token_id).sum(1).tolist() == [16, 16, 16]
    tokens = reloaded.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens[-2:] == ["ASSISTANT", ":"] and "<unk>" not in tokens
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_training_batch_labels_only_the_answer_and_eos():
    processor = build_processor()
    samples = make_split("train", 4)
    batch = encode_batch(processor, samples, with_answers=True)
    labelled = batch["labels"] != -100
    assert labelled.sum(1).tolist() == [2, 2, 2, 2]
    words = processor.tokenizer.convert_ids_to_tokens(batch["labels"][labelled].tolist())
    assert words[0::2] == [s.answer for s in samples] and set(words[1::2]) == {"</s>"}


def test_folding_the_standardizer_into_the_projector_is_exact():
    torch.manual_seed(0)
    model = build_model(num_layers=1).eval()
    standardizer = VisionStandardizer(model.config.vision_config.hidden_size)
    standardizer.running_mean.normal_(0, 3)
    standardizer.running_var.uniform_(0.5, 20)
    standardizer.eval()
    features = torch.randn(2, 16, model.config.vision_config.hidden_size) * 4
    projector = model.model.multi_modal_projector
    with torch.no_grad():
        expected = projector(standardizer(features))
        fold_standardizer(model, standardizer)
        torch.testing.assert_close(projector(features), expected, rtol=1e-5, atol=1e-5)


def test_grounding_targets_point_at_the_named_words():
    from shortlvlm.testbeds.toy.data import COLORS, SHAPES
    from shortlvlm.testbeds.toy.train import grounding_targets

    processor = build_processor()
    samples = make_split("test", 12)
    batch = encode_batch(processor, samples, with_answers=True)
    rows, positions, contents, cells = grounding_targets(samples, batch["input_ids"].shape[1], tail=2)
    words = processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][rows, positions].tolist())
    assert len(words) > 6
    for row, word, content, cell in zip(rows.tolist(), words, contents.tolist(), cells.tolist(), strict=True):
        sample = samples[row]
        assert word in sample.question.split()
        assert (content == 0) == (cell == 16)
        if content:  # the object in that cell is the one the word names
            shape, color = divmod(content - 1, 6)
            assert word in (SHAPES[shape], list(COLORS)[color])
            obj = sample.scene.objects[(cell // 4, cell % 4)]
            assert (obj.shape, obj.color) == (SHAPES[shape], list(COLORS)[color])


def test_relation_targets_name_the_cells_each_answer_depends_on():
    from shortlvlm.testbeds.toy.data import NEIGHBOURS, relation_holds
    from shortlvlm.testbeds.toy.train import relation_targets

    processor = build_processor()
    samples = make_split("test", 60)
    batch = encode_batch(processor, samples, with_answers=True)
    rows, positions, firsts, seconds = relation_targets(samples, batch["input_ids"].shape[1], tail=2)
    kinds = [samples[r].meta["kind"] for r in rows.tolist()]
    assert sorted(set(kinds)) == ["neighbour", "spatial"] and len(kinds) == 20  # 10 of each in 60
    # the position is the prompt's last token, right before the answer
    assert set(processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][rows, positions].tolist())) == {":"}
    assert (batch["labels"][rows, positions + 1] >= 0).all() and (batch["labels"][rows, positions] < 0).all()
    for row, first, second in zip(rows.tolist(), firsts.tolist(), seconds.tolist(), strict=True):
        sample, a, b = samples[row], divmod(first, 4), divmod(second, 4)
        meta = sample.meta
        if meta["kind"] == "spatial":  # the two compared objects, and the answer follows from their cells
            assert (sample.scene.objects[a].color, sample.scene.objects[a].shape) == (meta["color"], meta["shape"])
            assert (sample.scene.objects[b].color, sample.scene.objects[b].shape) == (
                meta["ref_color"], meta["ref_shape"])
            assert sample.answer == ("yes" if relation_holds(a, b, meta["relation"]) else "no")
        else:  # the reference object, and the neighbouring cell whose object is the answer
            assert (sample.scene.objects[a].color, sample.scene.objects[a].shape) == (
                meta["ref_color"], meta["ref_shape"])
            dr, dc = NEIGHBOURS[meta["relation"]]
            assert b == (a[0] + dr, a[1] + dc)
            assert sample.answer == getattr(sample.scene.objects[b], meta["attribute"])


@pytest.mark.slow
def test_training_then_continuing_with_frozen_model_keeps_its_function(tmp_path):
    from shortlvlm.testbeds.toy.train import main as train_main

    common = ["--layers", "2", "--batch-size", "4", "--val-size", "6", "--eval-every", "100", "--threads", "1"]
    train_main(["--out", str(tmp_path / "a"), "--steps", "3", "--relation-weight", "1", "--option-weight", "1",
                *common])
    train_main(["--out", str(tmp_path / "b"), "--steps", "2", "--init", str(tmp_path / "a"),
                "--heads-only-steps", "2", "--ground-cells", *common])
    processor = AutoProcessor.from_pretrained(tmp_path / "a")
    batch = encode_batch(processor, make_split("test", 4), with_answers=False)
    first = AutoModelForImageTextToText.from_pretrained(tmp_path / "a").eval()
    second = AutoModelForImageTextToText.from_pretrained(tmp_path / "b").eval()
    with torch.no_grad():
        torch.testing.assert_close(second(**batch).logits, first(**batch).logits)
