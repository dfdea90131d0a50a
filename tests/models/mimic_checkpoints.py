"""Mimic checkpoints on disk, laid out as the real ones are, for loading with trust_remote_code from a folder.

Qwen-VL-Chat's folder holds config.json with auto_map, the modeling code, safetensors, and its remote
tokenizer (tokenizer_config.json with auto_map, tokenization_qwen_mimic.py, qwen.tiktoken). mPLUG-Owl2's
holds the same model files, a Llama tokenizer and preprocessor_config.json for a CLIPImageProcessor, the
two parts its builder loads (builder.py 96, 122). The real Llama tokenizer is a sentencepiece model with a
32,000-token vocabulary; this one is byte-fallback BPE over single characters in tokenizer.json.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPImageProcessorPil, LlamaTokenizer

from .remote_mimics import MplugOwl2Config, MPLUGOwl2LlamaForCausalLM, QWenConfig, QWenLMHeadModel
from .tokenization_qwen_mimic import QWenTokenizer, write_byte_vocabulary

# 256 byte ranks, then <|endoftext|> <|im_start|> <|im_end|>, 205 extras, 6 ref/box/quad tags: <img> is 470.
QWEN_IMAGE_START = 256 + 3 + 205 + 6


def _save_model(model, directory: Path) -> None:
    type(model).config_class.register_for_auto_class()
    type(model).register_for_auto_class("AutoModelForCausalLM")
    model.save_pretrained(directory)


def write_qwen_vl_chat(directory: Path, num_layers: int = 6, seed: int = 0) -> Path:
    """A Qwen-VL-Chat mimic folder: byte-level QWenTokenizer, images read from paths, a 256-token image span."""
    directory.mkdir(parents=True, exist_ok=True)
    vocabulary = directory / "qwen.tiktoken"
    write_byte_vocabulary(str(vocabulary))
    tokenizer = QWenTokenizer(str(vocabulary))
    QWenTokenizer.register_for_auto_class("AutoTokenizer")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = QWenConfig(vocab_size=480, num_hidden_layers=num_layers, max_position_embeddings=512,
                        visual={"image_start_id": QWEN_IMAGE_START, "width": 24, "layers": 8, "n_queries": 256,
                                "image_size": 16})
    _save_model(QWenLMHeadModel(config).eval(), directory)
    return directory


def mplug_owl2_tokenizer() -> LlamaTokenizer:
    """A Llama tokenizer (ids 0-2 <unk> <s> </s>, 256 byte-fallback tokens, then single characters)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for char in "▁" + string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True)  # as Llama-2's tokenizer_config.json


def write_mplug_owl2(directory: Path, num_layers: int = 6, seed: int = 0) -> Path:
    """An mPLUG-Owl2 mimic folder: Llama tokenizer, CLIPImageProcessor for 16x16 images, 8 abstractor queries."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = mplug_owl2_tokenizer()
    tokenizer.save_pretrained(directory)
    CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(directory)
    torch.manual_seed(seed)
    config = MplugOwl2Config(vocab_size=len(tokenizer), num_hidden_layers=num_layers, max_position_embeddings=512)
    _save_model(MPLUGOwl2LlamaForCausalLM(config).eval(), directory)
    return directory


def write_calibration(directory: Path, count: int = 6, seed: int = 0) -> Path:
    """`count` image/prompt/answer records (JSON array) with small images of different sizes beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    records = []
    for index in range(count):
        size = (12 + 4 * index, 20 - 2 * index)
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(directory / f"image{index}.png")
        records.append({"id": f"s{index}", "image": f"image{index}.png",
                        "prompt": f"What colour is shape {index}?", "answer": f"It is red {index}."})
    path = directory / "calibration.json"
    path.write_text(json.dumps(records))
    return path
