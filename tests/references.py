"""Plain float64 references for the default path: LLaVA batches of unequal rows, the shared-prefix
template, TIS's important tokens from output_attentions, and each layer's input and output."""

from __future__ import annotations

import torch

from shortlvlm import get_adapter
from shortlvlm.capture import CalibrationBatch, batch_from_inputs
from shortlvlm.testbeds.tiny import tiny_model
from tests.test_importance import naive_tis, naive_top

TEMPLATE = [1, 7, 8]  # <s> and two "USER:" words every row starts with
IMAGE_TOKENS = 16  # tiny LLaVA: (16 px / 4 px patches)^2, CLS dropped


def eager_llava(num_layers: int = 6) -> torch.nn.Module:
    """A float64 tiny LLaVA whose forward pass can return its attention probabilities."""
    model = tiny_model("llava", num_layers).double()
    model.set_attn_implementation("eager")
    return model


def llava_rows(model, before: list[int], after: list[int], seed: int) -> list[dict[str, torch.Tensor]]:
    """One unpadded sample per row: TEMPLATE, `before[i]` question words, the image, `after[i]` words."""
    generator = torch.Generator().manual_seed(seed)
    image = model.config.image_token_id
    size = model.config.vision_config.image_size
    samples = []
    for head, tail in zip(before, after, strict=True):
        words = lambda n: torch.randint(20, 400, (n,), generator=generator).tolist()  # noqa: E731
        ids = TEMPLATE + words(head) + [image] * IMAGE_TOKENS + words(tail)
        samples.append({"input_ids": torch.tensor([ids]),
                        "pixel_values": torch.randn(1, 3, size, size, generator=generator, dtype=torch.float64)})
    return samples


def right_padded(model, samples: list[dict[str, torch.Tensor]]) -> CalibrationBatch:
    """The samples as one batch padded on the right (as shortlvlm.data.encode pads)."""
    width = max(s["input_ids"].shape[1] for s in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    attention = torch.zeros(len(samples), width, dtype=torch.long)
    for row, sample in enumerate(samples):
        length = sample["input_ids"].shape[1]
        ids[row, :length], attention[row, :length] = sample["input_ids"][0], 1
    inputs = {"input_ids": ids, "attention_mask": attention,
              "pixel_values": torch.cat([s["pixel_values"] for s in samples])}
    return batch_from_inputs(get_adapter(model), inputs)


def shared_prefix(samples: list[dict[str, torch.Tensor]], image: int) -> int:
    """How many leading tokens every sample has in common before its first image token."""
    rows = [s["input_ids"][0].tolist() for s in samples]
    rows = [row[:row.index(image)] for row in rows]
    length = 0
    while all(len(row) > length and row[length] == rows[0][length] for row in rows):
        length += 1
    return length


def naive_important(out, input_ids: torch.Tensor, image_id: int, template: int, top_p: float = 0.5) -> torch.Tensor:
    """[B, T] TIS's important tokens of an unpadded batch, from its output_attentions over every layer:
    the top-p of the image tokens and of the text tokens after the template, per row."""
    image = input_ids == image_id
    text = ~image
    text[:, :template] = False
    scores = naive_tis(out.attentions, image, text)
    return naive_top(scores, image, top_p) | naive_top(scores, text, top_p)


def layer_streams(model, inputs: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every decoder layer in one forward pass, read by hooks (the last layer's output
    is not in output_hidden_states, whose last entry is after the final norm)."""
    streams, handles = [], []
    for layer in get_adapter(model).layers:
        handles.append(layer.register_forward_hook(lambda module, args, out: streams.append(
            (args[0].detach().clone(), (out[0] if isinstance(out, tuple) else out).detach().clone()))))
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return streams
