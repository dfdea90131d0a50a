"""Calibration encoding: the answer mask covers the answer's tokens and nothing the template adds."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shortlvlm.data.calibration import CalibrationError, toy_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.models import Adapter, get_adapter
from shortlvlm.testbeds.toy.model import CHAT_TEMPLATE


@pytest.fixture
def toy():
    from shortlvlm import load

    return load("toy")


def answer_words(processor, batch) -> list[str]:
    return processor.tokenizer.batch_decode(
        [row[mask] for row, mask in zip(batch.inputs["input_ids"], batch.answer, strict=True)])


def test_tokens_a_template_writes_after_the_answer_are_not_answer_tokens(toy):
    # ChatML-like: each turn ends with an end-of-turn token followed by ordinary text (ChatML's
    # "<|im_end|>\n"); the word after "</s>" is the template's, and scoring it gave smol-llava an
    # answer perplexity of 465,000 (compare_smol, ppl) where the answers themselves cost ~1.1.
    model, processor = toy
    processor.chat_template = CHAT_TEMPLATE.replace("</s>", "</s> the")
    samples = toy_calibration(4)
    batch = encode_calibration(samples, processor, get_adapter(model), batch_size=4)[0]
    full = processor.tokenizer.batch_decode(batch.inputs["input_ids"])
    assert all("</s> the" in text for text in full)  # the template really writes a word after the answer
    assert answer_words(processor, batch) == [s.answer for s in samples]


def test_a_template_that_drops_the_answer_is_refused(toy):
    model, processor = toy
    # writes the user turn and a fixed reply, never the answer given
    processor.chat_template = CHAT_TEMPLATE.replace("{{ message['content'][0]['text'] }}", "no")
    with pytest.raises(CalibrationError, match="does not write the answer text"):
        encode_calibration(toy_calibration(2), processor, get_adapter(model), batch_size=2)


def test_a_batch_whose_samples_show_no_image_tokens_is_refused(toy):
    # TIS compares image and text tokens; an adapter or template that finds no image would otherwise
    # score text alone without a word (seen with the remote-code image masks broken on purpose).
    model, processor = toy
    spec = dataclasses.replace(get_adapter(model).spec,
                               image_mask=lambda config, ids: torch.zeros_like(ids, dtype=torch.bool))
    with pytest.raises(CalibrationError, match="no image tokens"):
        encode_calibration(toy_calibration(2), processor, Adapter(spec, model), batch_size=2)
