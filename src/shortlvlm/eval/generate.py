"""Batched greedy answering of benchmark questions with the model's own chat template."""

from __future__ import annotations

import torch
from torch import nn

from shortlvlm.data.benchmarks.base import BenchSample
from shortlvlm.errors import UnsupportedModelError
from shortlvlm.io.offload import input_device
from shortlvlm.log import progress_bar
from shortlvlm.models import Adapter

MAX_NEW_TOKENS = 8  # benchmark answers are a word, a number or a letter


def generation_settings(max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """What decides an answer's text besides the model, the question and the batching (for resume keys)."""
    return {"max_new_tokens": max_new_tokens, "decoding": "greedy", "padding_side": "left",
            "prompt": "chat template: image, then question; generation prompt",
            "decode": "new tokens, special tokens skipped, stripped"}


def conversation(question: str) -> list[dict]:
    """One user turn: the image, then the question text."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def check_can_answer(model: nn.Module, adapter: Adapter) -> None:
    """Refuse a model that cannot answer prompts here (call it on the skeleton, before weights load).

    Answering (compare, eval, bench) writes prompts with a transformers processor's chat template and
    decodes with `generate`.
    """
    if adapter.spec.chat_encoding is not None:
        raise UnsupportedModelError(
            f"{adapter.spec.name} ships no transformers processor: its own chat format is used for calibration "
            "(prune and score run on it), but answering prompts (compare, eval, bench) is not wired to it; "
            "prune it here and evaluate the saved checkpoint with the model's own scripts"
        )
    if not callable(getattr(model, "generate", None)):
        raise UnsupportedModelError(
            f"{type(model).__name__} has no generate(), so it cannot answer prompts (compare, eval, bench)"
        )


@torch.no_grad()
def answer_samples(
    model: nn.Module,
    processor,
    samples: list[BenchSample],
    *,
    batch_size: int = 16,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[str, str]:
    """{sample id: generated answer text} with left-padded batched greedy decoding (generation_settings)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    device = input_device(model)
    answers = {}
    batches = range(0, len(samples), batch_size)
    for start in progress_bar(batches, desc="answer", unit="batch"):
        chunk = samples[start:start + batch_size]
        prompts = [processor.apply_chat_template(conversation(s.question), add_generation_prompt=True)
                   for s in chunk]
        inputs = processor(images=[s.load_image() for s in chunk], text=prompts, return_tensors="pt",
                           padding=True).to(device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        for sample, text in zip(chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
            answers[sample.id] = text.strip()
    return answers
