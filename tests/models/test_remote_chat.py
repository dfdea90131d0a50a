"""Qwen-VL-Chat's and mPLUG-Owl2's chat encodings against token layouts written out by hand from their chat code.

The references spell the upstream layout token by token (ChatML turns with the image path's bytes padded to
256 for Qwen-VL-Chat; "USER: <|image|>... ASSISTANT: ...</s>" with one BOS and a -200 placeholder for
mPLUG-Owl2), using the mimic tokenizers' vocabularies directly, not the encodings under test.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from shortlvlm import load
from shortlvlm.data.calibration import CalibrationError, CalibrationSample
from shortlvlm.data.calibration_set import Calibration, read_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.models import get_adapter

from .mimic_checkpoints import QWEN_IMAGE_START, write_calibration, write_mplug_owl2, write_qwen_vl_chat

IM_START, IM_END, IMG_PAD = 257, 258, QWEN_IMAGE_START + 2  # byte ranks 0-255, then <|endoftext|> <|im_start|> ...


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote_chat")
    return {"qwen": write_qwen_vl_chat(root / "qwen"), "mplug": write_mplug_owl2(root / "mplug"),
            "calibration": write_calibration(root / "calib", count=3)}


@pytest.fixture(scope="module")
def samples(folders):
    return list(read_calibration(Calibration(source=str(folders["calibration"]))).samples)


def encoded(folder, samples, batch_size=8):
    model, parts = load(folder, trust_remote_code=True)
    return model, parts, encode_calibration(samples, parts, get_adapter(model), batch_size=batch_size)[0]


def utf8(text: str) -> list[int]:
    return list(text.encode())  # the mimic's byte vocabulary: token id = byte value


def qwen_reference(path: str, prompt: str, answer: str) -> list[int]:
    image = [QWEN_IMAGE_START, *utf8(path), *[IMG_PAD] * (256 - len(utf8(path))), QWEN_IMAGE_START + 1]
    return [IM_START, *utf8("system\nYou are a helpful assistant."), IM_END, *utf8("\n"),
            IM_START, *utf8("user\nPicture 1: "), *image, *utf8("\n" + prompt), IM_END, *utf8("\n"),
            IM_START, *utf8("assistant\n"), *utf8(answer), IM_END, *utf8("\n")]


def test_qwen_vl_chat_writes_chatml_with_the_image_path_as_bytes(folders, samples):
    _, _, batch = encoded(folders["qwen"], samples)
    for row, sample in enumerate(samples):
        expected = qwen_reference(str(sample.image_path.absolute()), sample.prompt, sample.answer)
        ids = batch.inputs["input_ids"][row]
        assert ids[:len(expected)].tolist() == expected
        assert bytes(ids[batch.answer[row]].tolist()).decode() == sample.answer
    assert batch.image.sum(1).tolist() == [256] * len(samples)  # the whole span between <img> and </img>
    assert "images" not in batch.inputs  # the model opens the files itself


def test_qwen_vl_chat_gets_a_file_for_an_image_without_one_and_reads_the_same_pixels(folders, samples):
    model, parts, _ = encoded(folders["qwen"], samples[:1])
    with Image.open(samples[0].image_path) as image:
        in_memory = CalibrationSample(id="m", prompt=samples[0].prompt, answer=samples[0].answer, image=image.copy())
    batch = encode_calibration([in_memory], parts, get_adapter(model))[0]
    ids = batch.inputs["input_ids"][0]
    span = ids[(ids == QWEN_IMAGE_START).nonzero()[0, 0] + 1:].tolist()
    path = bytes(span[:span.index(IMG_PAD)]).decode()
    assert path != str(samples[0].image_path.absolute()) and path.endswith(".png")
    with torch.no_grad():
        torch.testing.assert_close(model.transformer.visual.encode([path]),
                                   model.transformer.visual.encode([str(samples[0].image_path)]))


def llama_pieces(text: str) -> list[str]:
    """SentencePiece's view of one piece: a leading '▁' and '▁' for every space, one token per character."""
    return list("▁" + text.replace(" ", "▁"))


def test_mplug_owl2_writes_its_conversation_with_one_bos_and_the_placeholder(folders, samples):
    _, parts, batch = encoded(folders["mplug"], samples)
    tokenizer = parts.tokenizer
    for row, sample in enumerate(samples):
        expected = [tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(llama_pieces("USER: ")), -200,
                    *tokenizer.convert_tokens_to_ids(llama_pieces(f"{sample.prompt} ASSISTANT: {sample.answer}")),
                    tokenizer.eos_token_id]
        ids = batch.inputs["input_ids"][row]
        assert ids[:len(expected)].tolist() == expected
        assert tokenizer.decode(ids[batch.answer[row]]) == sample.answer
        assert not batch.answer[row, len(expected) - 1]  # the </s> the conversation writes is not the answer's
    assert batch.image.sum(1).tolist() == [1] * len(samples)
    assert batch.at_layers().image.sum(1).tolist() == [8] * len(samples)  # the abstractor's queries


def test_mplug_owl2_images_are_squared_by_resizing_not_cropped(folders, samples):
    _, parts, batch = encoded(folders["mplug"], samples)
    for row, sample in enumerate(samples):
        image = sample.load_image()
        assert image.size[0] != image.size[1]
        edge = max(image.size)
        squared = parts.image_processor(image.resize((edge, edge)), return_tensors="pt")["pixel_values"][0]
        cropped = parts.image_processor(image, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(batch.inputs["images"][row], squared)
        assert not torch.allclose(squared, cropped)


def test_right_padding_uses_each_models_pad_and_keeps_the_masks_on_real_tokens(folders, samples):
    short = CalibrationSample(id="short", prompt="Hi?", answer="No.", image_path=samples[0].image_path)
    for name, pad in (("qwen", 256), ("mplug", 0)):  # <|endoftext|>; mPLUG-Owl2 pads with <unk>
        _, _, batch = encoded(folders[name], [samples[0], short])
        ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
        padding = ~mask[1].bool()
        assert padding.any() and (ids[1][padding] == pad).all() and not padding[: int(mask[1].sum())].any()
        assert not (batch.valid[1] & padding).any() and not (batch.answer[1] & padding).any()


def test_missing_tokenizer_files_name_what_the_encoding_needs(folders, samples):
    model, _ = load(folders["mplug"], trust_remote_code=True)
    with pytest.raises(CalibrationError, match=r"preprocessor_config\.json"):
        encode_calibration(samples, None, get_adapter(model))
