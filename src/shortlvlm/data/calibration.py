"""Calibration sets: image + prompt (+ answer) samples, read from any supported format.

The formats (LLaVA JSON arrays and JSONL, chat messages, simple prompt/answer records, HF datasets;
images as paths, bytes or PIL images) are known in one place, `shortlvlm.data.calibration_formats`.
"id" is optional (default ``line<N>``, ``record<N>`` or ``row<N>``) and must be unique. Image paths
are relative to ``--image-folder`` (``image_folder``), else to the file's folder, and may not leave
it unless ``allow_outside_root`` (``--allow-outside-root``) is set. Image files are only checked to
exist while reading; `check_images` decodes them before a model loads, and `CalibrationSample.load_image`
opens them for encoding.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from shortlvlm.data.calibration_formats import (
    IMAGE_PLACEHOLDER,
    SUPPORTED,
    CalibrationError,
    image_value,
    open_records,
    parse_record,
    strip_image_placeholder,
)
from shortlvlm.testbeds.toy import BUNDLED_CALIBRATION

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_PLACEHOLDER", "CalibrationError", "CalibrationSample", "calibration_hash", "check_images",
           "load_calibration", "read_calibration_file", "read_calibration_jsonl", "strip_image_placeholder",
           "toy_calibration"]

FORMATS_HINT = SUPPORTED


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
    """Verify and decode every sample's image file, so a corrupt or unsupported image fails before a
    model is loaded rather than hours into a run."""
    for sample in samples:
        if sample.image is not None or sample.image_path is None:
            continue
        try:
            with Image.open(sample.image_path) as img:
                img.verify()  # the checksums (PNG); it reads no pixels, and a JPEG cut short passes it
            with Image.open(sample.image_path) as img:
                img.load()  # decodes every pixel: a truncated JPEG is found here
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise CalibrationError(
                f"calibration sample {sample.id}: cannot read image {sample.image_path}: "
                f"{exc or type(exc).__name__}; replace the file (PNG, JPEG, WebP, ...) or remove the sample"
            ) from None


def read_calibration_file(
    source: str | os.PathLike,
    *,
    limit: int | None = None,
    allow_outside_root: bool = False,
    require_image: bool = True,
    image_folder: str | os.PathLike | None = None,
    split: str | None = None,
    report: Callable[[str], None] | None = None,
) -> list[CalibrationSample]:
    """The samples of a calibration source in any supported format (the first `limit` usable ones).

    Text-only records (no image) are skipped and counted when `require_image` (TIS scores image and
    text tokens against each other, docs/design.md §2.1); multi-turn conversations give their first
    exchange, and the later ones are counted. `report` hears both counts.
    """
    check_limit(limit)
    root, records = open_records(source, split=split)
    if image_folder is not None:
        root = Path(image_folder).absolute()
        if not root.is_dir():
            raise CalibrationError(f"--image-folder {image_folder} is not a folder; give the folder the "
                                   "calibration file's image paths start from")
    samples: list[CalibrationSample] = []
    first_seen: dict[str, str] = {}
    text_only = multi_turn = later = 0
    for record in records:
        parsed = parse_record(record)
        path, image = image_value(parsed.image, record.where, root, allow_outside_root)
        if path is None and image is None and require_image:
            text_only += 1
            continue
        if parsed.id in first_seen:
            raise CalibrationError(f"{record.where}: duplicate id {parsed.id!r} (also on {first_seen[parsed.id]}); "
                                   "give every sample a unique id")
        first_seen[parsed.id] = record.where.rsplit(", ", 1)[-1]
        multi_turn, later = multi_turn + (parsed.later_exchanges > 0), later + parsed.later_exchanges
        samples.append(CalibrationSample(id=parsed.id, prompt=parsed.prompt, answer=parsed.answer, image_path=path,
                                         image=image))
        if limit is not None and len(samples) >= limit:
            break  # before the next record is read: the rest of the file is never parsed
    if not samples:
        if text_only:
            raise CalibrationError(
                f"{source}: none of its {text_only} samples has an image; Short-LVLM's token importance compares "
                "image and text tokens, so calibration needs samples with images (add 'image', or give "
                "--image-folder)")
        raise CalibrationError(f"{source}: calibration set is empty (no records); expected {SUPPORTED}")
    if report is not None and text_only:
        report(f"calibration: skipped {text_only} text-only sample(s) without an image (token importance compares "
               f"image and text tokens); using {len(samples)}")
    if report is not None and multi_turn:
        report(f"calibration: {multi_turn} multi-turn conversation(s) give their first exchange; {later} later "
               "exchange(s) left out (one exchange per image spreads --num-samples over more images)")
    return samples


def read_calibration_jsonl(path: str | os.PathLike, **kwargs) -> list[CalibrationSample]:
    """The samples of a calibration file (kept name: it reads every supported format, not only JSONL)."""
    return read_calibration_file(path, **kwargs)


def check_limit(limit: object) -> None:
    """Refuse a sample limit that is not a positive integer."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CalibrationError(f"calibration limit must be a positive integer, got {limit!r}")


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
    image_folder: str | os.PathLike | None = None,
    split: str | None = None,
) -> list[CalibrationSample]:
    """The calibration set named by --calib: a file, folder or hub id, "toy", or nothing (only for the toy)."""
    if source is None:
        if model_name in ("toy", "smol-llava"):  # both answer the shapes task
            return toy_calibration(limit)
        raise CalibrationError(
            f"--calib is required for {model_name or 'this model'}: calibration samples as {FORMATS_HINT}; "
            "see shortlvlm.data.calibration_formats"
        )
    if isinstance(source, str) and source == "toy":
        return toy_calibration(limit)
    return read_calibration_file(source, limit=limit, allow_outside_root=allow_outside_root,
                                 image_folder=image_folder, split=split, report=logger.warning)

