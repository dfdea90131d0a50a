"""How Qwen-VL-Chat's and mPLUG-Owl2's own chat code turns (image, prompt, answer) into model inputs.

Neither ships a transformers processor, so each spec carries a ChatEncoding that follows its published
code (files and lines below; tested against hand-built token layouts in tests/models/test_remote_chat.py).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from shortlvlm.models.base import ChatEncoding, ChatSample, EncodedSample

MPLUG_IMAGE_PLACEHOLDER = -200  # mPLUG-Owl2's IMAGE_TOKEN_INDEX (mplug_owl2/constants.py)
MPLUG_IMAGE_TOKEN = "<|image|>"  # DEFAULT_IMAGE_TOKEN, where tokenizer_image_token puts the placeholder
MPLUG_REPLY_END = "</s>"  # conv_mplug_owl2.sep2, written after each reply
QWEN_IMAGE_SPAN = 256  # tokenization_qwen.py IMG_TOKEN_SPAN: an image path may take at most 256 bytes
QWEN_SYSTEM = "You are a helpful assistant."  # modeling_qwen.py QWenLMHeadModel.chat's default system


def _load(loader, name_or_path: str, hub_kwargs: dict):
    try:
        return loader.from_pretrained(name_or_path, **hub_kwargs)
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None


def answer_span(prompt_ids: list[int], upto_ids: list[int], full_ids: list[int]) -> tuple[int, int] | None:
    """[start, end) of the answer in `full_ids`: after the prompt's own tokens, up to where the tokens of the
    text ending with the answer stop agreeing with the full ones (a token merged across the answer's end is
    left out, not guessed). None when the prompt's tokens are not a prefix of the full ones."""
    if full_ids[:len(prompt_ids)] != prompt_ids:
        return None
    agreeing = (i for i, (a, b) in enumerate(zip(upto_ids, full_ids, strict=False)) if a != b)
    shared = next(agreeing, min(len(upto_ids), len(full_ids)))
    return len(prompt_ids), max(shared, len(prompt_ids))


class QwenVLChatEncoding(ChatEncoding):
    """ChatML as `make_context` writes it (qwen_generation_utils.py 119-193), the image as its file path.

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\nPicture 1: <img>PATH</img>\\n
    PROMPT<|im_end|>\\n<|im_start|>assistant\\n, each role and content tokenized on its own with the image tags
    allowed; the answer follows as a history reply does (147-156): its tokens, <|im_end|>, then "\\n". The
    model reads each image from the path's bytes between <img> and </img> (modeling_qwen.py 561-571), so a
    sample without a file, or whose path is longer than 256 bytes or changes under NFC (the tokenizer
    normalises), is given a copy in a temporary file. Padding is <|endoftext|> (generation_config.json).
    """

    needs = "QWenTokenizer: tokenizer_config.json with its auto_map, tokenization_qwen.py and qwen.tiktoken"

    def load(self, name_or_path: str, hub_kwargs: dict) -> object | None:
        from transformers import AutoTokenizer

        return _load(AutoTokenizer, name_or_path, hub_kwargs)

    def encode(self, parts, config, sample: ChatSample) -> EncodedSample:
        tokenizer = parts
        path = str(sample.path.absolute()) if sample.path is not None else None
        if path is None or len(path.encode()) > QWEN_IMAGE_SPAN or unicodedata.normalize("NFC", path) != path:
            path = str(sample.write_copy())
        tags = set(tokenizer.IMAGE_ST)
        newline = tokenizer.encode("\n")

        def turn(role: str, content: str) -> list[int]:
            return [tokenizer.im_start_id, *tokenizer.encode(role, allowed_special=tags), *newline,
                    *tokenizer.encode(content, allowed_special=tags), tokenizer.im_end_id]

        query = tokenizer.from_list_format([{"image": path}, {"text": sample.prompt}])
        ids = [*turn("system", QWEN_SYSTEM), *newline, *turn("user", query), *newline,
               tokenizer.im_start_id, *tokenizer.encode("assistant"), *newline]
        if sample.answer is None:
            return EncodedSample(ids, None)
        answer = tokenizer.encode(sample.answer, allowed_special=tags)
        return EncodedSample([*ids, *answer, tokenizer.im_end_id, *newline], (len(ids), len(ids) + len(answer)))

    def pad_id(self, parts) -> int:
        return parts.eod_id

    def special_ids(self, parts) -> set[int]:
        return {parts.im_start_id, parts.im_end_id, parts.eod_id, parts.img_start_id, parts.img_end_id}


@dataclass
class TokenizerAndImageProcessor:
    """mPLUG-Owl2's two parts (its builder loads them separately); saved side by side like the checkpoint's."""

    tokenizer: object
    image_processor: object

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)


class MplugOwl2Encoding(ChatEncoding):
    """The `mplug_owl2` conversation (conversation.py 277-287: no system text, "USER: <|image|>PROMPT ASSISTANT:",
    a reply ends with "</s>"), tokenized by `tokenizer_image_token` (mm_utils.py 53-72: each piece between
    image tokens tokenized on its own, one BOS kept, a -200 placeholder in between), the image made square by
    resizing to its longer edge and run through the checkpoint's CLIPImageProcessor (README's inference
    example, process_images' 'resize' branch, mm_utils.py 29-50; builder.py 96 and 122 load the tokenizer and
    image processor). Padding is the unk token, as in training (train.py 707-712)."""

    needs = "the Llama tokenizer files and preprocessor_config.json (CLIPImageProcessor)"

    def load(self, name_or_path: str, hub_kwargs: dict) -> object | None:
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = _load(AutoTokenizer, name_or_path, hub_kwargs)
        image_processor = _load(AutoImageProcessor, name_or_path, hub_kwargs)
        if tokenizer is None or image_processor is None:
            return None
        return TokenizerAndImageProcessor(tokenizer, image_processor)

    @staticmethod
    def tokenize(tokenizer, text: str) -> list[int]:
        """tokenizer_image_token: the pieces around each image token, one BOS, -200 between pieces."""
        pieces = [tokenizer(piece).input_ids if piece else [] for piece in text.split(MPLUG_IMAGE_TOKEN)]
        bos = 1 if pieces[0][:1] == [tokenizer.bos_token_id] else 0
        ids = pieces[0][:bos]
        for index, piece in enumerate(pieces):
            ids += ([MPLUG_IMAGE_PLACEHOLDER] if index else []) + piece[bos:]
        return ids

    def encode(self, parts, config, sample: ChatSample) -> EncodedSample:
        tokenizer, image_processor = parts.tokenizer, parts.image_processor
        edge = max(sample.image.size)
        pixels = image_processor.preprocess(sample.image.resize((edge, edge)), return_tensors="pt")["pixel_values"][0]
        prompt = f"USER: {MPLUG_IMAGE_TOKEN}{sample.prompt} ASSISTANT:"
        prompt_ids = self.tokenize(tokenizer, prompt)
        if sample.answer is None:
            return EncodedSample(prompt_ids, None, {"images": pixels})
        upto = f"{prompt} {sample.answer}"
        full_ids = self.tokenize(tokenizer, upto + MPLUG_REPLY_END)
        span = answer_span(prompt_ids, self.tokenize(tokenizer, upto), full_ids)
        return EncodedSample(full_ids, span, {"images": pixels})

    def pad_id(self, parts) -> int:
        tokenizer = parts.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id

    def special_ids(self, parts) -> set[int]:
        return set(parts.tokenizer.all_special_ids)
