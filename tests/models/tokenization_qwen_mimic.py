"""A tiny stand-in for Qwen-VL-Chat's `QWenTokenizer` (remote code), faithful where calibration encoding looks.

It follows `tokenization_qwen.py` of Qwen/Qwen-VL-Chat as mirrored in GitHub Immerso-AIIP-Ltd/Qwen-VL-Chat at
e176543 (line numbers of that file):
- the vocabulary file `qwen.tiktoken` holds one base64 token and its rank per line (`_load_tiktoken_bpe`, 53);
  the special tokens take the ids after the ranks in this order: <|endoftext|>, <|im_start|>, <|im_end|>,
  205 <|extra_i|>, then <ref> </ref> <box> </box> <quad> </quad> <img> </img> <imgpad> (44-50, 141-146),
  so <img> is rank count + 214 (151857 in the real one, `config.visual["image_start_id"]`);
- `tokenize` (245-296) normalises to NFC, parses the allowed special tokens (all by default), and then
  replaces what lies between <img> and </img> by the UTF-8 bytes of the image path, one token per byte
  whose id is the byte's value, padded with <imgpad> to 256 tokens (IMG_TOKEN_SPAN, 50); a longer path
  is an error;
- `from_list_format` (399-417) writes each image as "Picture {n}: <img>{path}</img>\\n" and text as is;
- the ids the chat code uses are attributes (im_start_id, im_end_id, eod_id, img_start_id, img_end_id,
  img_pad_id, 150-181); no transformers special tokens (bos/eos/pad) are registered.

Deviation: the vocabulary is the 256 single bytes only (the real file has 151,643 byte-pair ranks), so
tiktoken's split pattern and merges have nothing to merge and are left out: text becomes its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import os
import unicodedata

from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "qwen.tiktoken"}
ENDOFTEXT, IMSTART, IMEND = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
EXTRAS = tuple(f"<|extra_{i}|>" for i in range(205))
IMAGE_ST = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>")
IMG_TOKEN_SPAN = 256


def write_byte_vocabulary(path: str) -> None:
    """A qwen.tiktoken file whose ranks are the 256 single bytes (rank = byte value)."""
    with open(path, "w", encoding="utf8") as f:
        f.writelines(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256))


class QWenTokenizer(PreTrainedTokenizer):
    """Byte-level QWenTokenizer: special tokens, image paths as byte tokens padded to 256, from_list_format."""

    vocab_files_names = VOCAB_FILES_NAMES

    def __init__(self, vocab_file, errors="replace", **kwargs):
        with open(vocab_file, "rb") as f:
            ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in f if line.strip())}
        if any(len(token) != 1 or rank != token[0] for token, rank in ranks.items()):
            raise ValueError("this mimic reads single-byte vocabularies only (rank = byte value)")
        self.vocab_file, self.errors, self.mergeable_ranks = vocab_file, errors, ranks
        self.IMAGE_ST = IMAGE_ST
        self.image_start_tag, self.image_end_tag, self.image_pad_tag = IMAGE_ST[6:9]
        names = (ENDOFTEXT, IMSTART, IMEND, *EXTRAS, *IMAGE_ST)
        self.special_tokens = {name: len(ranks) + i for i, name in enumerate(names)}
        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.im_start_id, self.im_end_id = self.special_tokens[IMSTART], self.special_tokens[IMEND]
        self.img_start_id, self.img_end_id, self.img_pad_id = (self.special_tokens[t] for t in IMAGE_ST[6:9])
        self.decoder = {v: k for k, v in {**ranks, **self.special_tokens}.items()}
        super().__init__(errors=errors, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.mergeable_ranks) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict:
        return dict(self.mergeable_ranks)

    def _split_special(self, text: str, allowed) -> list:
        """Special tokens (those allowed) as strings, everything else as one bytes token per UTF-8 byte."""
        allowed = set(self.special_tokens) if allowed == "all" else set(allowed)
        tokens, at = [], 0
        while at < len(text):
            found = [(text.find(s, at), s) for s in allowed if text.find(s, at) >= 0]
            start, special = min(found, key=lambda f: (f[0], -len(f[1]))) if found else (len(text), None)
            tokens.extend(bytes([b]) for b in text[at:start].encode("utf-8"))
            if special is None:
                break
            tokens.append(special)
            at = start + len(special)
        return tokens

    def tokenize(self, text: str, allowed_special="all", disallowed_special=(), **kwargs) -> list:
        tokens = self._split_special(unicodedata.normalize("NFC", text), allowed_special)
        out, at = [], 0
        while self.image_start_tag in tokens[at:]:
            start = tokens.index(self.image_start_tag, at)
            if self.image_end_tag not in tokens[start:]:
                raise ValueError("Unclosed image token")
            end = tokens.index(self.image_end_tag, start)
            path = b"".join(t if isinstance(t, bytes) else t.encode() for t in tokens[start + 1:end])
            if len(path) > IMG_TOKEN_SPAN:
                raise ValueError(f"The content in {self.image_start_tag}..{self.image_end_tag} is too long")
            span = [bytes([b]) for b in path] + [self.image_pad_tag] * (IMG_TOKEN_SPAN - len(path))
            out += [*tokens[at:start], self.image_start_tag, *span, self.image_end_tag]
            at = end + 1
        return out + tokens[at:]

    def _convert_token_to_id(self, token) -> int:
        if token in self.special_tokens:
            return self.special_tokens[token]
        return self.mergeable_ranks[token]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, (str, bytes)):
            return self._convert_token_to_id(tokens)
        return [self._convert_token_to_id(t) for t in tokens]

    def _convert_id_to_token(self, index: int):
        return self.decoder[index]

    def convert_tokens_to_string(self, tokens) -> str:
        return b"".join(t if isinstance(t, bytes) else t.encode() for t in tokens).decode("utf-8", self.errors)

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        if skip_special_tokens:
            ids = [i for i in ids if i < self.eod_id]
        return self.convert_tokens_to_string([self.decoder[i] for i in ids])

    def from_list_format(self, list_format: list[dict]) -> str:
        text, images = "", 0
        for element in list_format:
            if "image" in element:
                images += 1
                text += f"Picture {images}: {self.image_start_tag}{element['image']}{self.image_end_tag}\n"
            elif "text" in element:
                text += element["text"]
            else:
                raise ValueError(f"Unsupport element: {element}")
        return text

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        path = os.path.join(save_directory, "qwen.tiktoken")
        write_byte_vocabulary(path)
        return (path,)
