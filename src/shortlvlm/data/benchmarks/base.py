"""Benchmark samples and careful reading of benchmark files under a data folder."""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from shortlvlm.data.errors import BenchmarkDataError
from shortlvlm.jsontext import loads_json


@dataclass(kw_only=True)
class BenchSample:
    """One prompt to answer: its image, the formatted question, the ground truth, what the metric needs."""

    id: str
    image_path: Path | None
    image: Image.Image | None = None
    question: str
    answer: str | list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    image_base64: str | None = field(default=None, repr=False)

    def load_image(self) -> Image.Image:
        """The sample's image in RGB: the decoded `image`, the base64 payload, or the file."""
        if self.image is not None:
            return self.image.convert("RGB")
        try:
            if self.image_base64 is not None:
                raw = base64.b64decode(self.image_base64, validate=False)
                return Image.open(io.BytesIO(raw)).convert("RGB")
            if self.image_path is not None:
                with Image.open(self.image_path) as img:
                    return img.convert("RGB")
        except (binascii.Error, UnidentifiedImageError, OSError) as exc:
            where = self.image_path or "its base64 image field"
            raise BenchmarkDataError(f"sample {self.id}: cannot decode image from {where}: {exc}") from None
        raise BenchmarkDataError(f"sample {self.id} has no image")


def percent(numerator: float, denominator: float) -> float:
    """100 * numerator / denominator, 0.0 when there is nothing to divide by."""
    return 100.0 * numerator / denominator if denominator else 0.0


def require_file(root: Path, relative: str, layout: str) -> Path:
    """root/relative, or an error naming the missing file and the layout expected around it."""
    path = root / relative
    if not path.is_file():
        raise BenchmarkDataError(f"missing benchmark file: {path}\nExpected layout under {root}:\n{layout}")
    return path


def path_inside(root: Path, relative: object, *, base: str = "", source: str) -> Path:
    """root/base/relative, refusing absolute paths and '..' that would leave the data folder."""
    if not isinstance(relative, str) or not relative.strip():
        raise BenchmarkDataError(f"{source}: image path is empty or not a string: {relative!r}")
    joined = os.path.normpath(os.path.join(base, relative))
    if os.path.isabs(relative) or joined == os.pardir or joined.startswith(os.pardir + os.sep):
        raise BenchmarkDataError(
            f"{source}: image path {relative!r} points outside the data folder {root}; refusing to read it"
        )
    return root / joined


def existing_image(
    root: Path, relative: object, *, source: str, layout: str, base: str = "", suffixes: tuple[str, ...] = ()
) -> Path:
    """The image file at root/base/relative (optionally with one of `suffixes` appended), checked to exist."""
    path = path_inside(root, relative, base=base, source=source)
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in suffixes)):
        if candidate.is_file():
            return candidate
    raise BenchmarkDataError(f"{source}: image not found: {path}\nExpected layout under {root}:\n{layout}")


def read_json(path: Path) -> Any:
    """Parsed JSON of `path`, or an error naming the file, line and column."""
    try:
        return loads_json(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkDataError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise BenchmarkDataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    records = []
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = loads_json(line)
                except json.JSONDecodeError as exc:
                    raise BenchmarkDataError(f"{path}, line {lineno}: invalid JSON line: {exc.msg}") from None
                if not isinstance(record, dict):
                    raise BenchmarkDataError(
                        f"{path}, line {lineno}: expected a JSON object, got {record!r:.60}"
                    )
                records.append((lineno, record))
    except UnicodeDecodeError as exc:
        raise BenchmarkDataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return records


def field_of(record: dict[str, Any], key: str, where: str) -> Any:
    """record[key], or an error saying which record lacks which field."""
    if not isinstance(record, dict) or key not in record:
        raise BenchmarkDataError(f"{where}: missing field {key!r}")
    return record[key]
