"""Calibration sets: image + prompt (+ answer) samples read from a JSON-lines file.

One JSON object per line; blank lines are skipped. Two layouts are accepted:

- LLaVA conversations: ``{"id": "a1", "image": "img/a1.png", "conversations": [{"from": "human",
  "value": "<image>\\nWhat is shown?"}, {"from": "gpt", "value": "A dog."}]}``. The first human turn
  ("human" or "user") is the prompt and the first reply after it ("gpt" or "assistant") the answer;
  later turns are ignored.
- Simple: ``{"id": "a1", "image": "img/a1.png", "prompt": "What is shown?", "answer": "A dog."}``
  ("question" may replace "prompt"; "answer" is optional).

"id" is optional (default ``line<N>``) and must be unique. Image paths are relative to the JSONL
file's folder and may not leave it unless ``allow_outside_root`` (``--allow-outside-root``) is set.
Images are only checked to exist while reading; they are opened by `CalibrationSample.load_image`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from shortlvlm.data.benchmarks.base import path_inside
from shortlvlm.data.errors import BenchmarkDataError
from shortlvlm.errors import ShortLVLMError
from shortlvlm.jsontext import loads_json
from shortlvlm.toy.calibration import BUNDLED_CALIBRATION

IMAGE_PLACEHOLDER = "<image>"
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")
FORMATS_HINT = (
    "one JSON object per line, either LLaVA conversations "
    '{"id", "image", "conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]} '
    'or {"id", "image", "prompt", "answer"}'
)


class CalibrationError(ShortLVLMError):
    """A calibration file is missing, malformed, or points at images that cannot be used."""


@dataclass(frozen=True, kw_only=True)
class CalibrationSample:
    """One calibration prompt: the user's text without image placeholders, the reply, and the image."""

    id: str
    prompt: str
    answer: str | None
    image_path: Path | None = None
    image: Image.Image | None = field(default=None, compare=False, repr=False)

    def load_image(self) -> Image.Image | None:
        """The sample's image in RGB (the in-memory image if set, else the file), or None if it has none."""
        if self.image is not None:
            return self.image.convert("RGB")
        if self.image_path is None:
            return None
        try:
            with Image.open(self.image_path) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise CalibrationError(
                f"calibration sample {self.id}: cannot read image {self.image_path}: {exc}; "
                "replace the file or remove the sample"
            ) from None


def check_images(samples: list[CalibrationSample]) -> None:
    """Open and verify every sample's image file (cheap: no decoding to pixels), so a corrupt or
    unsupported image fails before a model is loaded rather than hours into a run."""
    for sample in samples:
        if sample.image is not None or sample.image_path is None:
            continue
        try:
            with Image.open(sample.image_path) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise CalibrationError(
                f"calibration sample {sample.id}: cannot read image {sample.image_path}: "
                f"{exc or type(exc).__name__}; replace the file (PNG, JPEG, WebP, ...) or remove the sample"
            ) from None


def strip_image_placeholder(text: str) -> str:
    """`text` without "<image>" placeholders and the whitespace around them."""
    parts = (part.strip() for part in text.split(IMAGE_PLACEHOLDER))
    return "\n".join(part for part in parts if part)


def read_calibration_jsonl(
    path: str | os.PathLike,
    *,
    limit: int | None = None,
    allow_outside_root: bool = False,
    require_image: bool = True,
) -> list[CalibrationSample]:
    """The samples of a calibration JSONL file (the first `limit` of them), checked line by line."""
    check_limit(limit)
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file not found: {path}; expected a JSONL file ({FORMATS_HINT})")
    root = path.absolute().parent
    samples: list[CalibrationSample] = []
    first_line_of: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if limit is not None and len(samples) >= limit:
                    break
                if not line.strip():
                    continue
                where = f"{path}, line {lineno}"
                sample = parse_record(
                    decode_line(line, where), lineno, where, root,
                    allow_outside_root=allow_outside_root, require_image=require_image,
                )
                if sample.id in first_line_of:
                    raise CalibrationError(
                        f"{where}: duplicate id {sample.id!r} (also on line {first_line_of[sample.id]}); "
                        "give every sample a unique id"
                    )
                first_line_of[sample.id] = lineno
                samples.append(sample)
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from None
    if not samples:
        raise CalibrationError(f"{path}: calibration set is empty (no JSON lines); expected {FORMATS_HINT}")
    return samples


def check_limit(limit: object) -> None:
    """Refuse a sample limit that is not a positive integer."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CalibrationError(f"calibration limit must be a positive integer, got {limit!r}")


def decode_line(line: str, where: str) -> dict[str, Any]:
    """The JSON object on one line, or an error saying what is wrong with it."""
    try:
        record = loads_json(line)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno}); "
                               f"expected {FORMATS_HINT}") from None
    if not isinstance(record, dict):
        raise CalibrationError(f"{where}: expected a JSON object, got {type(record).__name__} "
                               f"{record!r:.60}; expected {FORMATS_HINT}")
    return record


def parse_record(
    record: dict[str, Any], lineno: int, where: str, root: Path, *, allow_outside_root: bool, require_image: bool
) -> CalibrationSample:
    """One sample from one decoded line."""
    sample_id = record_id(record, lineno, where)
    has_prompt = [key for key in ("prompt", "question") if key in record]
    if "conversations" in record:
        if has_prompt:
            raise CalibrationError(f"{where}: has both 'conversations' and {has_prompt[0]!r}; keep only one")
        prompt, answer = conversation_turns(record["conversations"], where)
    elif has_prompt:
        if len(has_prompt) > 1:
            raise CalibrationError(f"{where}: has both 'prompt' and 'question'; keep only one")
        prompt = text_field(record, has_prompt[0], where)
        answer = None if record.get("answer") is None else text_field(record, "answer", where)
    else:
        raise CalibrationError(f"{where}: no prompt: add a 'conversations' list or a 'prompt' field "
                               f"({FORMATS_HINT})")
    prompt = strip_image_placeholder(prompt)
    if not prompt:
        raise CalibrationError(f"{where}: the prompt is empty once the <image> placeholder is removed; "
                               "add the question text")
    image_path = record_image(record.get("image"), root, where, allow_outside_root, require_image)
    return CalibrationSample(id=sample_id, prompt=prompt, answer=answer, image_path=image_path)


def record_id(record: dict[str, Any], lineno: int, where: str) -> str:
    """The record's id as text, or `line<N>` when it gives none."""
    value = record.get("id")
    if value is None:
        return f"line{lineno}"
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise CalibrationError(f"{where}: 'id' must be a non-empty string or an integer, got {value!r:.60}")
    return str(value)


def text_field(record: dict[str, Any], key: str, where: str) -> str:
    """record[key], which must be a string."""
    value = record[key]
    if not isinstance(value, str):
        raise CalibrationError(f"{where}: {key!r} must be a string, got {type(value).__name__} {value!r:.60}")
    return value


def conversation_turns(conversations: object, where: str) -> tuple[str, str | None]:
    """(first user turn, first assistant turn after it or None) of a LLaVA conversation."""
    if not isinstance(conversations, list):
        raise CalibrationError(f"{where}: 'conversations' must be a list of "
                               f'{{"from": ..., "value": ...}} turns, got {type(conversations).__name__}')
    prompt = None
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str):
            raise CalibrationError(f"{where}: conversation turn {index} must be an object with a string "
                                   f"'from' and 'value', got {turn!r:.60}")
        role = turn["from"].lower()
        if role not in USER_ROLES + ASSISTANT_ROLES or (prompt is None and role in ASSISTANT_ROLES):
            continue
        value = turn.get("value")
        if not isinstance(value, str):
            raise CalibrationError(f"{where}: conversation turn {index} 'value' must be a string, "
                                   f"got {type(value).__name__}")
        if prompt is None and role in USER_ROLES:
            prompt = value
        elif prompt is not None and role in ASSISTANT_ROLES:
            return prompt, value
    if prompt is None:
        raise CalibrationError(f"{where}: the conversation has no human turn; add "
                               '{"from": "human", "value": "<image>\\n..."} before the reply')
    return prompt, None


def record_image(
    value: object, root: Path, where: str, allow_outside_root: bool, require_image: bool
) -> Path | None:
    """The checked path of the record's image, or None when it has none and none is required."""
    if value is None:
        if require_image:
            raise CalibrationError(f"{where}: no 'image' field; add the image's path relative to {root}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise CalibrationError(f"{where}: 'image' must be a non-empty path string (one image per sample), "
                               f"got {value!r:.60}")
    if allow_outside_root:
        path = Path(value) if os.path.isabs(value) else root / value
    else:
        try:
            path = path_inside(root, value, source=where)
        except BenchmarkDataError as exc:
            raise CalibrationError(f"{exc}; pass --allow-outside-root (allow_outside_root=True) "
                                   "if you trust this file") from None
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name longer than the filesystem allows
        raise CalibrationError(f"{where}: unusable image path {value!r:.80} ({exc.strerror}); "
                               f"fix the path (relative to {root})") from None
    if not found:
        raise CalibrationError(f"{where}: image not found: {path}; fix the path (relative to {root})")
    return path


def calibration_hash(samples: list[CalibrationSample]) -> str:
    """sha256 (hex) of the samples in order: ids, prompts, answers and image bytes."""
    digest = hashlib.sha256()
    for sample in samples:
        for part in (sample.id, sample.prompt, sample.answer):
            digest.update(b"\x00" if part is None else b"\x01" + length_prefixed(part.encode("utf-8")))
        digest.update(length_prefixed(image_bytes(sample)))
    return digest.hexdigest()


def length_prefixed(data: bytes) -> bytes:
    """`data` preceded by its length, so consecutive fields cannot run into each other."""
    return len(data).to_bytes(8, "big") + data


def image_bytes(sample: CalibrationSample) -> bytes:
    """What identifies a sample's image: PNG of the in-memory pixels, else the file's bytes (b"" if none)."""
    if sample.image is not None:
        buffer = io.BytesIO()
        sample.image.save(buffer, format="PNG")
        return buffer.getvalue()
    if sample.image_path is None:
        return b""
    try:
        return sample.image_path.read_bytes()
    except OSError as exc:
        raise CalibrationError(f"calibration sample {sample.id}: cannot read image {sample.image_path}: "
                               f"{exc.strerror or exc}") from None


def toy_calibration(limit: int | None = None) -> list[CalibrationSample]:
    """The calibration set bundled for the toy model (256 shapes questions)."""
    return read_calibration_jsonl(BUNDLED_CALIBRATION, limit=limit)


def load_calibration(
    source: str | os.PathLike | None,
    *,
    model_name: str | None = None,
    limit: int | None = None,
    allow_outside_root: bool = False,
) -> list[CalibrationSample]:
    """The calibration set named by --calib: a JSONL file, "toy", or nothing (only for the toy model)."""
    if source is None:
        if model_name in ("toy", "smol-llava"):  # both answer the shapes task
            return toy_calibration(limit)
        raise CalibrationError(
            f"--calib is required for {model_name or 'this model'}: a JSONL file of calibration samples "
            f"({FORMATS_HINT}); see the docstring of shortlvlm.data.calibration"
        )
    if isinstance(source, str) and source == "toy":
        return toy_calibration(limit)
    return read_calibration_jsonl(source, limit=limit, allow_outside_root=allow_outside_root)
