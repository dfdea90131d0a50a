"""smol-llava's prompts: one shapes question in SmolLM2's chat format, batched for the model.

Used by training and by the assembly's reload check, so it lives apart from the trainer: assembling
the model (which loading `smol-llava` may do) imports no training code.
"""

from __future__ import annotations

import torch

from shortlvlm.testbeds.toy.data import ToySample


def conversation(sample: ToySample, answer: bool = False) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]
    if answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": sample.answer}]})
    return messages


def encode(processor, samples: list[ToySample], with_answers: bool) -> dict[str, torch.Tensor]:
    """Left-padded prompts; with answers, `answer<|im_end|>` appended and labelled (the rest -100)."""
    prompts = [processor.apply_chat_template(conversation(s), add_generation_prompt=True) for s in samples]
    batch = dict(processor(images=[s.image() for s in samples], text=prompts, return_tensors="pt", padding=True))
    if not with_answers:
        return batch
    tok = processor.tokenizer
    answers = [tok(s.answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
               for s in samples]
    width = max(map(len, answers))
    tail = torch.full((len(samples), width), tok.pad_token_id)
    labels_tail = torch.full((len(samples), width), -100)
    mask_tail = torch.zeros((len(samples), width), dtype=torch.long)
    for row, ids in enumerate(answers):
        tail[row, :len(ids)] = torch.tensor(ids)
        labels_tail[row, :len(ids)] = torch.tensor(ids)
        mask_tail[row, :len(ids)] = 1
    labels = torch.cat([torch.full_like(batch["input_ids"], -100), labels_tail], dim=1)
    return {"input_ids": torch.cat([batch["input_ids"], tail], 1), "pixel_values": batch["pixel_values"],
            "attention_mask": torch.cat([batch["attention_mask"], mask_tail], 1), "labels": labels,
            "prompt_length": batch["input_ids"].shape[1]}
