"""Every calibration layout shortlvlm reads, in one place: the containers, the record formats, the image values.

Containers (`open_records`):
- a JSON array (LLaVA's own `llava_v1_5_mix665k.json`) or JSON lines, UTF-8 with or without a BOM;
- HF `datasets`: a `save_to_disk` folder, `.parquet` / `.arrow` files, or a hub id (`--calib-split`),
  read by `datasets` itself (images in an `Image` column arrive decoded).

Record formats (`parse_record`):
- LLaVA: ``{"image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}``;
- chat messages (ShareGPT / OpenAI / HF chat): ``{"messages": [{"role": "user", "content": str or
  [{"type": "image"}, {"type": "text", "text": ...}]}, {"role": "assistant", ...}], "image" or "images"}``;
- simple: ``{"image", "prompt" (or "question"), "answer"}``.

A multi-turn conversation gives its first exchange (the first user turn, with the image, and the reply
to it); the reader counts the later exchanges it leaves out. Calibration has a sample budget
(`--num-samples`), and one exchange per record spreads it over more images, which TIS and SCP
measure; later turns of LLaVA's conversations also lean on earlier answers ("Why?").

A sample has one image: its prompt may mark it with one "<image>" placeholder (or one chat image
part), which is removed, since the model's chat template places the image. More placeholders, one in
the answer, or an empty answer are refused; a sample without an answer gives no answer at all.

Images (`image_value`): a path (relative to `--image-folder`, else to the file's folder), bytes, a
base64 `data:` URI, a PIL image, or a `{"bytes", "path"}` dict as `datasets` stores them. URLs are
refused: nothing is downloaded at calibration time.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from shortlvlm.data.benchmarks.base import path_inside
from shortlvlm.data.errors import BenchmarkDataError
from shortlvlm.errors import ShortLVLMError
from shortlvlm.jsontext import loads_json

IMAGE_PLACEHOLDER = "<image>"
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "model", "bot")
URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://", "hf://")
DATASET_SUFFIXES = (".parquet", ".arrow")
SUPPORTED = (
    "LLaVA conversations {\"image\", \"conversations\": [{\"from\": \"human\", \"value\": ...}, {\"from\": \"gpt\", "
    "\"value\": ...}]}; chat messages {\"messages\": [{\"role\": \"user\", \"content\": text or parts}, ...], "
    "\"image\" or \"images\"}; or {\"image\", \"prompt\", \"answer\"} - as a JSON array, JSON lines, or a datasets "
    "folder / parquet / arrow file / hub id"
)


class CalibrationError(ShortLVLMError):
    """A calibration file is missing, malformed, or points at images that cannot be used."""


@dataclass(frozen=True)
class Record:
    """One record of a container, with where it is (for messages) and the id it gets if it names none."""

    where: str
    data: Any
    default_id: str


@dataclass(frozen=True)
class Parsed:
    """What a record says: its id, the first exchange, its image value, its format and its later exchanges."""

    id: str
    prompt: str
    answer: str | None
    image: Any
    format: str
    later_exchanges: int


# ------------------------------------------------------------------------------------------ containers


def looks_like_hub_id(text: str) -> bool:
    """`org/name` with no path-like parts: what a hub dataset id looks like."""
    parts = text.split("/")
    return (len(parts) == 2 and all(parts) and not text.startswith((".", "~"))
            and not any(p in ("..", ".") for p in parts) and not text.lower().endswith((".json", ".jsonl")))


def open_records(source: str | os.PathLike, *, split: str | None = None) -> tuple[Path, Iterator[Record]]:
    """(the folder relative image paths start from, the records) of a calibration source."""
    path = Path(source)
    if path.is_dir():
        return path, dataset_records(load_dataset_folder(path, split), path.name)
    if path.is_file():
        with path.open("rb") as handle:
            magic = handle.read(6)
        if path.suffix.lower() in DATASET_SUFFIXES or magic[:4] == b"PAR1" or magic == b"ARROW1":
            return path.absolute().parent, dataset_records(load_dataset_file(path, split), path.name)
        return path.absolute().parent, text_records(path)
    if looks_like_hub_id(str(source)):
        return Path.cwd(), dataset_records(load_hub_dataset(str(source), split), str(source))
    raise CalibrationError(f"calibration file not found: {path}; expected a JSON/JSONL file, a datasets folder "
                           f"or file, or a hub id ({SUPPORTED})")


def text_records(path: Path) -> Iterator[Record]:
    """Records of a JSON array or JSON-lines file (a leading BOM is ignored)."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            first = ""
            while not first:
                line = handle.readline()
                if not line:
                    return
                first = line.lstrip()[:1]
            handle.seek(0)
            if first == "[":
                yield from array_records(path, handle.read())
                return
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    yield Record(f"{path}, line {lineno}", decode_line(line, f"{path}, line {lineno}"),
                                 f"line{lineno}")
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from None


def array_records(path: Path, text: str) -> Iterator[Record]:
    """Records of one JSON array (LLaVA's own data files)."""
    try:
        items = loads_json(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path}: a JSON array that is not valid JSON ({exc.msg}, line {exc.lineno}, "
                               f"column {exc.colno}); fix the file or write one JSON object per line") from None
    if not isinstance(items, list):
        raise CalibrationError(f"{path}: expected a JSON array of records; {SUPPORTED}")
    for index, item in enumerate(items, start=1):
        where = f"{path}, record {index}"
        if not isinstance(item, dict):
            raise CalibrationError(f"{where}: expected a JSON object, got {type(item).__name__} {item!r:.60}; "
                                   f"expected {SUPPORTED}")
        yield Record(where, item, f"record{index}")


def decode_line(line: str, where: str) -> dict[str, Any]:
    """The JSON object on one line, or an error saying what is wrong with it."""
    try:
        record = loads_json(line)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno}); "
                               f"expected {SUPPORTED}") from None
    if not isinstance(record, dict):
        raise CalibrationError(f"{where}: expected a JSON object, got {type(record).__name__} "
                               f"{record!r:.60}; expected {SUPPORTED}")
    return record


def _datasets():
    try:
        import datasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise CalibrationError("reading a datasets folder, parquet/arrow file or hub id needs the `datasets` "
                               "package: pip install datasets") from None
    datasets.disable_progress_bars()
    return datasets


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:240]


def pick_split(found, name: str, split: str | None):
    """One split of a DatasetDict: `split`, or the only one there is."""
    if not hasattr(found, "keys"):
        return found
    splits = list(found.keys())
    if split is None and len(splits) == 1:
        return found[splits[0]]
    if split is None or split not in splits:
        asked = f"has no split {split!r}" if split is not None else "has several splits"
        raise CalibrationError(f"{name} {asked} ({', '.join(splits)}); choose one with --calib-split")
    return found[split]


def load_dataset_folder(path: Path, split: str | None):
    """A folder written by datasets' save_to_disk."""
    if not any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
        raise CalibrationError(f"calibration source {path} is a folder but not a datasets save_to_disk folder (no "
                               f"dataset_info.json or dataset_dict.json); give a file or such a folder ({SUPPORTED})")
    datasets = _datasets()
    try:
        found = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many kinds; any is the folder's fault here
        raise CalibrationError(f"cannot read the datasets folder {path} ({_one_line(exc)})") from None
    return pick_split(found, str(path), split)


def load_dataset_file(path: Path, split: str | None):
    """A parquet or arrow file, through datasets' own builders."""
    datasets = _datasets()
    kind = "arrow" if path.suffix.lower() == ".arrow" else "parquet"
    try:
        found = datasets.load_dataset(kind, data_files=str(path))
    except Exception as exc:
        raise CalibrationError(f"cannot read {path} as a {kind} file ({_one_line(exc)})") from None
    return pick_split(found, str(path), split)


def load_hub_dataset(name: str, split: str | None):
    """A dataset named by its hub id (from the local cache when offline)."""
    datasets = _datasets()
    try:
        found = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise CalibrationError(f"cannot load the dataset {name!r} from the Hub or its cache ({_one_line(exc)}); "
                               "download it first (datasets save_to_disk, or its parquet files) and give the "
                               "path") from None
    return pick_split(found, name, split)


def dataset_records(dataset, name: str) -> Iterator[Record]:
    """Rows of a datasets Dataset as records (read one at a time, so a limit reads only that many)."""
    for index in range(len(dataset)):
        where = f"{name}, row {index}"
        try:
            row = dataset[index]
        except Exception as exc:  # an undecodable image cell, for one
            raise CalibrationError(f"{where}: cannot be read ({_one_line(exc)}); fix or drop the row") from None
        yield Record(where, row, f"row{index}")


# ------------------------------------------------------------------------------------------ records


def parse_record(record: Record) -> Parsed:
    """The first exchange and the image of one record, in whichever supported format it is."""
    data, where = record.data, record.where
    prompt_keys = [key for key in ("prompt", "question") if data.get(key) is not None]
    formats = [key for key in ("conversations", "messages") if key in data] + prompt_keys[:1]
    if len(formats) > 1:
        raise CalibrationError(f"{where}: has both {formats[0]!r} and {formats[1]!r}; keep only one")
    if not formats:
        shown = ", ".join(sorted(map(str, data))[:8]) or "none"
        raise CalibrationError(f"{where}: no prompt in a supported format (its keys: {shown}); supported: "
                               f"{SUPPORTED}")
    if formats[0] in ("conversations", "messages"):
        turns = data[formats[0]]
        chat = formats[0] == "messages" or (isinstance(turns, list) and turns and isinstance(turns[0], dict)
                                            and "role" in turns[0])
        label = "chat messages" if chat else "LLaVA conversations"
        exchanges, inline = (chat_exchanges if chat else llava_exchanges)(turns, f"{where} ({label})", formats[0])
        prompt, answer = exchanges[0]
        later = len(exchanges) - 1
    else:
        if len(prompt_keys) > 1:
            raise CalibrationError(f"{where}: has both 'prompt' and 'question'; keep only one")
        label, inline, later = "prompt/answer", None, 0
        prompt = text_field(data, prompt_keys[0], where)
        answer = None if data.get("answer") is None else text_field(data, "answer", where)
    image = inline if inline is not None else record_image(data, where)
    check_placeholders(prompt, answer, image, f"{where} ({label})")
    prompt = strip_image_placeholder(prompt)
    if not prompt:
        raise CalibrationError(f"{where} ({label}): the prompt is empty once the <image> placeholder is removed; "
                               "add the question text")
    if answer is not None and not answer.strip():
        raise CalibrationError(
            f"{where} ({label}): the answer is empty; write the reply, or leave the answer out (no 'answer', no "
            "reply turn) for a sample without one: the loss-based methods (sleb, ppl, taylor, tis-loss) score the "
            "answer's tokens, and the others take samples without answers")
    return Parsed(record_id(data, record.default_id, where), prompt, answer, image, label, later)


def check_placeholders(prompt: str, answer: str | None, image: Any, where: str) -> None:
    """Refuse more image placeholders than the one image a sample has, and a placeholder in the answer."""
    in_prompt = prompt.count(IMAGE_PLACEHOLDER)
    in_answer = 0 if answer is None else answer.count(IMAGE_PLACEHOLDER)
    if in_answer:
        raise CalibrationError(f"{where}: the answer holds {in_answer} <image> placeholder(s); the image goes in the "
                               "prompt: remove <image> from the answer")
    if in_prompt > 1:
        images = "no image" if image is None else "1 image"
        raise CalibrationError(f"{where}: the prompt has {in_prompt} <image> placeholders but the sample has "
                               f"{images}; a calibration sample takes one image: keep one <image> (or split the "
                               "record into one sample per image)")


def record_id(data: dict, default: str, where: str) -> str:
    """The record's id as text, or `default` when it gives none."""
    value = data.get("id")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise CalibrationError(f"{where}: 'id' must be a non-empty string or an integer, got {value!r:.60}")
    return str(value)


def text_field(data: dict, key: str, where: str) -> str:
    """data[key], which must be a string."""
    value = data[key]
    if not isinstance(value, str):
        raise CalibrationError(f"{where}: {key!r} must be a string, got {type(value).__name__} {value!r:.60}")
    return value


def strip_image_placeholder(text: str) -> str:
    """`text` without "<image>" placeholders and the whitespace around them."""
    parts = (part.strip() for part in text.split(IMAGE_PLACEHOLDER))
    return "\n".join(part for part in parts if part)


def pair_turns(turns: list[tuple[str, str]], where: str, example: str) -> list[tuple[str, str | None]]:
    """(user text, reply or None) per exchange from (role, text) turns; other roles (system) are skipped."""
    exchanges: list[tuple[str, str | None]] = []
    for role, text in turns:
        if role in USER_ROLES:
            exchanges.append((text, None))
        elif role in ASSISTANT_ROLES and exchanges and exchanges[-1][1] is None:
            exchanges[-1] = (exchanges[-1][0], text)
    if not exchanges:
        raise CalibrationError(f"{where}: the conversation has no human turn; add {example} before the reply")
    return exchanges


def llava_exchanges(turns: object, where: str, key: str) -> tuple[list[tuple[str, str | None]], None]:
    """The exchanges of a LLaVA `conversations` list ({"from", "value"} turns)."""
    if not isinstance(turns, list):
        raise CalibrationError(f"{where}: {key!r} must be a list of "
                               f'{{"from": ..., "value": ...}} turns, got {type(turns).__name__}')
    roles = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str):
            raise CalibrationError(f"{where}: conversation turn {index} must be an object with a string "
                                   f"'from' and 'value', got {turn!r:.60}")
        role = turn["from"].lower()
        if role not in USER_ROLES + ASSISTANT_ROLES:
            continue
        if not isinstance(turn.get("value"), str):
            raise CalibrationError(f"{where}: conversation turn {index} 'value' must be a string, "
                                   f"got {type(turn.get('value')).__name__}")
        roles.append((role, turn["value"]))
    return pair_turns(roles, where, '{"from": "human", "value": "<image>\\n..."}'), None


def chat_exchanges(turns: object, where: str, key: str) -> tuple[list[tuple[str, str | None]], Any]:
    """The exchanges of a chat `messages` list ({"role", "content"}), and an image given inside a turn."""
    if not isinstance(turns, list):
        raise CalibrationError(f"{where}: {key!r} must be a list of "
                               f'{{"role": ..., "content": ...}} turns, got {type(turns).__name__}')
    roles, inline = [], None
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str):
            raise CalibrationError(f"{where}: turn {index} must be an object with a string 'role' and a "
                                   f"'content', got {turn!r:.60}")
        text, image = content_text(turn.get("content"), f"{where}: turn {index}")
        if inline is None:
            inline = image
        roles.append((turn["role"].lower(), text))
    return pair_turns(roles, where, '{"role": "user", "content": "..."}'), inline


def content_text(content: object, where: str) -> tuple[str, Any]:
    """(the text, an inline image or None) of a chat turn's content: a string or a list of parts."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise CalibrationError(f"{where}: 'content' must be a string or a list of parts such as "
                               f'{{"type": "text", "text": ...}}, got {type(content).__name__} {content!r:.60}')
    texts, image = [], None
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise CalibrationError(f"{where}: a content part must be an object or a string, got {part!r:.60}")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise CalibrationError(f"{where}: a text part needs a string 'text', got {part!r:.60}")
            texts.append(part["text"])
        elif kind in ("image", "image_url"):
            texts.append(IMAGE_PLACEHOLDER)  # counted like LLaVA's "<image>" (one per sample), then removed
            value = part.get("image", part.get("url", part.get("path")))
            if kind == "image_url":
                value = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else \
                    part.get("image_url")
            if value is not None and image is None:
                image = value
    return "\n".join(texts), image


def record_image(data: dict, where: str) -> Any:
    """The record's own image value ("image", or "images" holding at most one), or None."""
    key = "image" if data.get("image") is not None else "images"
    if key in data:
        images = data[key]
        if images is None or images == []:
            return None
        if not isinstance(images, list):
            images = [images]
        if len(images) > 1:
            raise CalibrationError(f"{where}: {key!r} holds {len(images)} images; calibration samples take one "
                                   "image each: split the record or keep its first image")
        return images[0]
    return None


# ------------------------------------------------------------------------------------------ images


def image_value(value: Any, where: str, root: Path, allow_outside_root: bool) -> tuple[Path | None, Image.Image | None]:
    """(checked file path, None) or (None, decoded image) for an image value; (None, None) for no image."""
    if value is None:
        return None, None
    if isinstance(value, Image.Image):
        return None, value
    if isinstance(value, dict) and ("bytes" in value or "path" in value):  # datasets' Image storage
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
        if value is None:
            return None, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None, decode_image(bytes(value), where)
    if not isinstance(value, str) or not value.strip():
        raise CalibrationError(f"{where}: 'image' must be a path, image bytes or an image (one per sample), "
                               f"got {value!r:.60}")
    if value.startswith("data:image/") and ";base64," in value:
        try:
            data = base64.b64decode(value.split(";base64,", 1)[1], validate=True)
        except (binascii.Error, ValueError):
            raise CalibrationError(f"{where}: the image data URI is not valid base64; fix or drop the sample") from None
        return None, decode_image(data, where)
    if value.lower().startswith(URL_PREFIXES):
        raise CalibrationError(f"{where}: the image is a URL ({value:.80}); shortlvlm does not download at "
                               "calibration time: download the images first and give their local paths "
                               "(relative to --image-folder)")
    return image_path(value, where, root, allow_outside_root), None


def decode_image(data: bytes, where: str) -> Image.Image:
    """Embedded image bytes as a loaded image, or an error naming the record."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CalibrationError(f"{where}: cannot read the embedded image ({exc or type(exc).__name__}); "
                               "replace it or drop the sample") from None


def image_path(value: str, where: str, root: Path, allow_outside_root: bool) -> Path:
    """The checked path of an image file named relative to `root`."""
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
        raise CalibrationError(f"{where}: image not found: {path}; fix the path (relative to {root}), or give "
                               "the folder the paths start from with --image-folder")
    return path
