"""The answers file of a resumable evaluation: a key line, then one JSON line per answered question.

Answers are appended (and flushed to disk) as they come, so a killed `eval` keeps them; the same
command reads back those saved under the same key (shortlvlm.resume.keys.answers_key). Torn last
lines, other keys and anything not ours are ignored, never trusted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.jsontext import loads_json


def read_partial_answers(path: Path, key: dict) -> dict[str, str]:
    """Answers saved by an interrupted run with the same key ({} if none; torn last lines skipped)."""
    if not path.exists():
        return {}
    lines = path.read_text(errors="replace").splitlines()
    try:
        header = loads_json(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("key") != key:
        return {}
    answers = {}
    for line in lines[1:]:
        try:
            record = loads_json(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the interruption (or otherwise not ours)
        if isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("answer"), str):
            answers[record["id"]] = record["answer"]
    return answers


def start_answer_file(path: Path, key: dict, kept: dict[str, str]) -> TextIO:
    """Rewrite the file as key + the answers kept (atomically: a kill here loses nothing); open it to append."""
    records = [{"key": key}, *({"id": i, "answer": a} for i, a in kept.items())]
    write_text_atomically(path, "".join(json.dumps(r) + "\n" for r in records))
    return path.open("a")


def append_answers(handle: TextIO, answers: dict[str, str]) -> None:
    """Append answers and make them durable before the next batch is asked."""
    for sample_id, answer in answers.items():
        handle.write(json.dumps({"id": sample_id, "answer": answer}) + "\n")
    handle.flush()
    os.fsync(handle.fileno())
