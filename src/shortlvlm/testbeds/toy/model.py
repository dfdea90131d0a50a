"""The toy LVLM: a real LLaVA (CLIP-style tower + Llama decoder), word-level tokenizer and processor."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from shortlvlm.testbeds.toy.data import IMAGE_SIZE, vocabulary

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
CHAT_WORDS = ("USER", "ASSISTANT", ":")
PATCH_SIZE = 12
NUM_LAYERS = 16

# LLaVA-1.5's conversation format, one word per token: "USER : <image> question ASSISTANT : answer </s>".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER : "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image> {% elif item['type'] == 'text' %}{{ item['text'] }} {% endif %}"
    "{% endfor %}"
    "{% else %}ASSISTANT : {{ message['content'][0]['text'] }} </s> {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT :{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the toy vocabulary; <s> is prepended to every sequence."""
    words = list(SPECIAL_TOKENS) + list(CHAT_WORDS) + vocabulary()
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="left", model_max_length=128,
    )


def build_processor() -> LlavaProcessor:
    """LLaVA processor: PIL-backend CLIP image processor (no torchvision) + the word tokenizer."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token="<image>",
        num_additional_image_tokens=1,
    )


def build_config(vocab_size: int, num_layers: int = NUM_LAYERS) -> LlavaConfig:
    """LLaVA config: 2-layer CLIP tower on 48x48 images (16 patches of 12 px), Llama decoder."""
    return LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model", "hidden_size": 128, "intermediate_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE, "projection_dim": 128,
        },
        text_config={
            "model_type": "llama", "vocab_size": vocab_size, "hidden_size": 128,
            "intermediate_size": 352, "num_hidden_layers": num_layers, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_position_embeddings": 128, "pad_token_id": 0,
            "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
        },
        image_token_id=SPECIAL_TOKENS.index("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def build_model(num_layers: int = NUM_LAYERS) -> LlavaForConditionalGeneration:
    """A randomly initialised toy LVLM."""
    return LlavaForConditionalGeneration(build_config(len(build_tokenizer()), num_layers))
