"""Turn calibration samples into model batches with the model's own chat template and processor."""

from __future__ import annotations

import torch
from tqdm import tqdm

from shortlvlm.capture import CalibrationBatch, batch_from_inputs
from shortlvlm.data.calibration import CalibrationError, CalibrationSample
from shortlvlm.eval.generate import conversation
from shortlvlm.models import Adapter


def _texts(processor, sample: CalibrationSample) -> tuple[str, str, str]:
    """(prompt up to the assistant turn, prompt + answer up to the answer's last character, prompt + answer).

    The middle text ends where the answer does: what a template writes after it (an end-of-turn
    token and, in ChatML, a newline) is the template's, not the answer's, and the loss-based scorers
    must not score it (docs/design.md §5, "answer tokens").
    """
    messages = conversation(sample.prompt)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    if sample.answer is None:
        return prompt, prompt, prompt
    reply = [{"role": "assistant", "content": [{"type": "text", "text": sample.answer}]}]
    full = processor.apply_chat_template(messages + reply)
    answer = sample.answer.strip()
    at = full.find(answer, len(prompt)) if full.startswith(prompt) and answer else -1
    if at < 0:
        raise CalibrationError(
            f"calibration sample {sample.id!r}: the chat template does not write the answer text after the "
            "prompt, so its tokens cannot be located; check the model's chat template"
        )
    return prompt, full[:at + len(answer)], full


def _context_limit(adapter: Adapter) -> int | None:
    return getattr(adapter.config.get_text_config(), "max_position_embeddings", None)


def encode_calibration(
    samples: list[CalibrationSample],
    processor,
    adapter: Adapter,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> list[CalibrationBatch]:
    """Right-padded batches of image + prompt + answer, with image, valid and answer-token masks."""
    if not samples:
        raise CalibrationError("the calibration set is empty; give at least one sample")
    if batch_size < 1:
        raise CalibrationError(f"batch size must be positive, got {batch_size}")
    if processor is None:
        raise CalibrationError(
            "this model has no processor or tokenizer (none of its files in the checkpoint), so calibration "
            "samples cannot be encoded; save the processor beside the weights (processor.save_pretrained(DIR))"
        )
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "right"
    special = set(tokenizer.all_special_ids)
    limit = _context_limit(adapter)
    batches = []
    chunks = range(0, len(samples), batch_size)
    for start in tqdm(chunks, desc="encode", unit="batch", disable=not progress, leave=False):
        chunk = samples[start:start + batch_size]
        images = [s.load_image() for s in chunk]
        missing = [s.id for s, image in zip(chunk, images, strict=True) if image is None]
        if missing:
            raise CalibrationError(f"calibration sample {missing[0]!r} has no image; every sample needs one")
        prompts, answered, fulls = zip(*(_texts(processor, s) for s in chunk), strict=True)
        inputs = dict(processor(images=images, text=list(fulls), return_tensors="pt", padding=True))
        input_ids = inputs["input_ids"]
        if limit is not None and input_ids.shape[1] > limit:
            longest = chunk[int(inputs["attention_mask"].sum(1).argmax())].id
            raise CalibrationError(
                f"calibration sample {longest!r} is {input_ids.shape[1]} tokens long, more than the model's "
                f"context of {limit}; shorten its prompt/answer or drop it"
            )
        batch = batch_from_inputs(adapter, inputs, special)
        batch.answer = _answer_mask(processor, images, prompts, answered, input_ids, batch.valid)
        batches.append(batch)
    return batches


def _answer_mask(processor, images, prompts, answered, input_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, T] True on the answer tokens: after the prompt's own tokenization, up to the answer's end.

    The end is the longest prefix that the tokenization of the text ending with the answer shares
    with the full tokenization: a token merged across the answer's end is left out, not guessed.
    """
    answer = torch.zeros_like(valid)
    for row, (image, prompt, upto) in enumerate(zip(images, prompts, answered, strict=True)):
        prompt_ids, upto_ids = (processor(images=[image], text=[text], return_tensors="pt")["input_ids"][0]
                                for text in (prompt, upto))
        length = len(prompt_ids)
        if not torch.equal(input_ids[row, :length], prompt_ids):
            raise CalibrationError(
                "the tokenized prompt is not a prefix of prompt + answer with this chat template; "
                "answer tokens cannot be located"
            )
        shared = min(len(upto_ids), input_ids.shape[1])
        differs = (input_ids[row, :shared] != upto_ids[:shared]).nonzero()
        end = int(differs[0]) if len(differs) else shared
        answer[row, length:end] = valid[row, length:end]
    return answer
