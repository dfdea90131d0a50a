"""Answer a benchmark's questions with a model and score them by the benchmark's official metric."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from torch import nn

from shortlvlm.data.benchmarks import check_scoring, score_benchmark
from shortlvlm.eval import generate
from shortlvlm.log import progress_bar
from shortlvlm.resume.answers import append_answers, read_partial_answers, start_answer_file

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AnswerLog:
    """The file answers are appended to as they come (JSON lines), and the key that says whose answers they are."""

    path: str | os.PathLike
    key: dict = dataclasses.field(default_factory=dict)


def evaluate(
    model: nn.Module, processor, bench: str, samples: list, *, batch_size: int = 16,
    resume: AnswerLog | None = None, lenient: bool = False, mmbench_policy: str = "exact",
) -> tuple[dict, dict[str, str]]:
    """Answer benchmark questions (from load_benchmark) and score them: (metrics, {id: answer}).

    With `resume`, every answered batch is appended to its file (JSON lines, the first holding its
    key); answers already there for the same key are reused, so a killed run continues.
    Scores use the official scripts' answer parsing; `lenient` swaps in forgiving readers (recorded
    in the metrics as `"parser": "lenient"`); `mmbench_policy` decides MMBench's unreadable answers.
    """
    check_scoring(bench, lenient=lenient, mmbench_policy=mmbench_policy)  # before any answer is generated
    if resume is None:
        predictions = generate.answer_samples(model, processor, samples, batch_size=batch_size)
    else:
        predictions = _answer_resumably(model, processor, samples, Path(resume.path), resume.key,
                                        batch_size=batch_size)
    metrics = score_benchmark(bench, samples, predictions, lenient=lenient, mmbench_policy=mmbench_policy)
    return metrics, predictions


def _answer_resumably(model, processor, samples, path: Path, key: dict, *, batch_size: int):
    known = {s.id for s in samples}
    predictions = {k: v for k, v in read_partial_answers(path, key).items() if k in known}
    todo = [s for s in samples if s.id not in predictions]
    if predictions:
        logger.info(f"resuming: {len(predictions)} of {len(samples)} answers found in {path}")
    with start_answer_file(path, key, predictions) as handle:
        chunk = batch_size * 4
        for start in progress_bar(range(0, len(todo), chunk), desc="answer", unit="chunk"):
            answers = generate.answer_samples(model, processor, todo[start:start + chunk], batch_size=batch_size)
            append_answers(handle, answers)
            predictions.update(answers)
    return predictions
