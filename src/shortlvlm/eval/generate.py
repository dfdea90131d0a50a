"""Batched greedy answering of benchmark questions with the model's own chat template."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from shortlvlm.data.benchmarks.base import BenchSample
from shortlvlm.io.offload import input_device


def conversation(question: str) -> list[dict]:
    """One user turn: the image, then the question text."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


@torch.no_grad()
def answer_samples(
    model: nn.Module,
    processor,
    samples: list[BenchSample],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 8,
    progress: bool = True,
) -> dict[str, str]:
    """{sample id: generated answer text} with left-padded batched greedy decoding."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    device = input_device(model)
    answers = {}
    batches = range(0, len(samples), batch_size)
    for start in tqdm(batches, desc="answer", unit="batch", disable=not progress):
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
