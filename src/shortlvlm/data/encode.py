"""Turn calibration samples into model batches with the model's own chat template and processor.

Architectures that ship no transformers processor (Qwen-VL-Chat, mPLUG-Owl2) name a ChatEncoding in
their spec, which writes each sample the way their own chat code does (models/remote_chat.py).
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from shortlvlm.capture import CalibrationBatch, batch_from_inputs
from shortlvlm.data.calibration import CalibrationError, CalibrationSample
from shortlvlm.eval.generate import conversation
from shortlvlm.log import progress_bar
from shortlvlm.models import Adapter
from shortlvlm.models.base import ChatEncoding, ChatSample


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
) -> list[CalibrationBatch]:
    """Right-padded batches of image + prompt + answer, with image, valid and answer-token masks."""
    if not samples:
        raise CalibrationError("the calibration set is empty; give at least one sample")
    if batch_size < 1:
        raise CalibrationError(f"batch size must be positive, got {batch_size}")
    encoding = adapter.spec.chat_encoding
    if processor is None and encoding is not None:
        raise CalibrationError(
            f"{adapter.spec.name} calibration samples are encoded with the checkpoint's own {encoding.needs}; "
            "they could not be loaded from it, so put them beside the weights as the original checkpoint has them"
        )
    if processor is None:
        raise CalibrationError(
            "this model has no processor or tokenizer (none of its files in the checkpoint), so calibration "
            "samples cannot be encoded; save the processor beside the weights (processor.save_pretrained(DIR))"
        )
    limit = _context_limit(adapter)
    write_copy = _image_copies()
    batches = []
    chunks = range(0, len(samples), batch_size)
    for start in progress_bar(chunks, desc="encode", unit="batch", leave=False):
        chunk = samples[start:start + batch_size]
        images = [s.load_image() for s in chunk]
        missing = [s.id for s, image in zip(chunk, images, strict=True) if image is None]
        if missing:
            raise CalibrationError(f"calibration sample {missing[0]!r} has no image; every sample needs one")
        if encoding is None:
            batch = _processor_batch(processor, adapter, chunk, images)
        else:
            batch = _chat_batch(encoding, processor, adapter, chunk, images, write_copy)
        imageless = [s.id for s, row in zip(chunk, batch.image, strict=True) if not row.any()]
        if imageless:
            raise CalibrationError(
                f"calibration sample {imageless[0]!r}: the encoded input has no image tokens where the "
                f"{adapter.spec.name} adapter looks for them, so token importance cannot be measured; the "
                "processor or chat template did not write the image into the prompt"
            )
        length = batch.real.shape[1]  # what the decoder layers see (mPLUG-Owl2's images expanded)
        if limit is not None and length > limit:
            longest = chunk[int(batch.real.sum(1).argmax())].id
            raise CalibrationError(
                f"calibration sample {longest!r} is {length} tokens long, more than the model's "
                f"context of {limit}; shorten its prompt/answer or drop it"
            )
        batches.append(batch)
    return batches


def _processor_batch(processor, adapter: Adapter, chunk: list[CalibrationSample], images: list) -> CalibrationBatch:
    """One batch through the transformers processor and its chat template."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "right"
    prompts, answered, fulls = zip(*(_texts(processor, s) for s in chunk), strict=True)
    inputs = dict(processor(images=images, text=list(fulls), return_tensors="pt", padding=True))
    batch = batch_from_inputs(adapter, inputs, set(tokenizer.all_special_ids))
    batch.answer = _answer_mask(processor, images, prompts, answered, inputs["input_ids"], batch.valid)
    return batch


def _chat_batch(encoding: ChatEncoding, parts, adapter: Adapter, chunk: list[CalibrationSample], images: list,
                write_copy: Callable[[Image.Image], Path]) -> CalibrationBatch:
    """One batch written by the architecture's own chat encoding, right-padded with its pad id."""
    encoded = []
    for sample, image in zip(chunk, images, strict=True):
        turn = ChatSample(sample.prompt, sample.answer, image, sample.image_path, lambda image=image: write_copy(image))
        one = encoding.encode(parts, adapter.config, turn)
        if sample.answer is not None and one.answer is None:
            raise CalibrationError(
                f"calibration sample {sample.id!r}: the tokenized prompt is not a prefix of prompt + answer in "
                f"{adapter.spec.name}'s conversation format, so the answer tokens cannot be located"
            )
        encoded.append(one)
    width = max(len(one.input_ids) for one in encoded)
    input_ids = torch.full((len(encoded), width), encoding.pad_id(parts), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    answer = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, one in enumerate(encoded):
        input_ids[row, :len(one.input_ids)] = torch.tensor(one.input_ids)
        attention_mask[row, :len(one.input_ids)] = 1
        if one.answer is not None:
            answer[row, one.answer[0]:one.answer[1]] = True
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    inputs.update({key: torch.stack([one.inputs[key] for one in encoded]) for key in encoded[0].inputs})
    batch = batch_from_inputs(adapter, inputs, encoding.special_ids(parts))
    batch.answer = answer & batch.valid
    return batch


def _image_copies() -> Callable[[Image.Image], Path]:
    """Writes images to PNG files in one temporary folder, made on first use and removed when the process ends
    (for models that read images from a path written into the prompt, such as Qwen-VL-Chat)."""
    folder: Path | None = None
    numbers = itertools.count()

    def write(image: Image.Image) -> Path:
        nonlocal folder
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="shortlvlm-images-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = folder / f"{next(numbers)}.png"
        image.save(path)
        return path

    return write


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
