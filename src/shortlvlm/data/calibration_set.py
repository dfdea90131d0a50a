"""The calibration options (`Calibration`) and the set they name, read once (`CalibrationSet`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from shortlvlm.data.calibration import (
    CalibrationError,
    CalibrationSample,
    calibration_hash,
    check_images,
    load_calibration,
)
from shortlvlm.options import (
    Options,
    is_bool,
    non_negative_int,
    option,
    optional_positive_int,
    options,
    positive_int,
)

if TYPE_CHECKING:
    from shortlvlm.capture import CalibrationBatch

SAMPLES_SOURCE = "<samples>"  # how a plan names a calibration set given as a list of samples


@options
class Calibration(Options):
    """Which calibration samples the statistics are measured on, and how they are batched."""

    error = CalibrationError

    source: str | None = option(
        None, flag="--calib",
        help="calibration samples: a JSON array or JSONL file (LLaVA conversations, chat messages, or "
             "image/prompt/answer), a datasets save_to_disk folder, a parquet/arrow file, or a hub dataset id. "
             "Optional for MODEL=toy (bundled set)")
    image_folder: str | None = option(
        None, help="folder the image paths in --calib start from (LLaVA's data: the folder holding coco/, gqa/, "
                   "...); default: the --calib file's folder")
    split: str | None = option(None, flag="--calib-split",
                               help="split of a datasets folder or hub dataset with several (e.g. train)")
    num_samples: int | None = option(None, check=optional_positive_int,
                                     help="use the first N calibration samples (default: all; more than the set "
                                          "has is refused)")
    offset: int = option(0, check=non_negative_int, flag="--calib-offset",
                         help="skip the first N usable samples: --calib-offset 64 --num-samples 64 is a file's "
                              "second disjoint draw of 64 (what compare --calib-draws uses)")
    batch_size: int = option(8, check=positive_int, help="calibration batch size")
    allow_outside_root: bool = option(False, check=is_bool,
                                      help="let image paths in --calib point outside the folder they start from")

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            object.__setattr__(self, "source", os.fspath(self.source))
        super().__post_init__()


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Calibration samples read once, the options they were read with, and (once encoded) their batches."""

    options: Calibration
    samples: tuple[CalibrationSample, ...]
    # Batches encoded for one model's processor and adapter (shared by the jobs that prune that model).
    batches: tuple[CalibrationBatch, ...] | None = dataclasses.field(default=None, compare=False, repr=False)

    @cached_property
    def hash(self) -> str:
        return calibration_hash(list(self.samples))

    def info(self) -> dict:
        """The plan's record: the options (num_samples = how many were used) and the samples' hash."""
        return {**self.options.to_dict(), "source": self.options.source or "toy", "num_samples": len(self.samples),
                "hash": self.hash}

    def with_batches(self, batches: Sequence[CalibrationBatch]) -> CalibrationSet:
        return dataclasses.replace(self, batches=tuple(batches))


def read_calibration(options: Calibration, model_name: str | None = None) -> CalibrationSet:
    """Read and check the set `options` names (every image opened), before any model is loaded."""
    limit = None if options.num_samples is None else options.offset + options.num_samples
    samples = load_calibration(options.source, model_name=model_name, limit=limit,
                               allow_outside_root=options.allow_outside_root, image_folder=options.image_folder,
                               split=options.split)
    source = "the bundled toy set" if options.source in (None, "toy") else options.source
    if options.offset and options.offset >= len(samples):
        raise CalibrationError(
            f"Calibration.offset (--calib-offset) is {options.offset}, but {source} has only {len(samples)} usable "
            "sample(s) (with an image); give a smaller --calib-offset")
    samples = samples[options.offset:]
    if options.num_samples is not None and len(samples) < options.num_samples:
        # Fewer samples than asked for would change the statistics without a word; the default (None) takes all.
        after = f" after the first {options.offset}" if options.offset else ""
        raise CalibrationError(
            f"Calibration.num_samples (--num-samples) is {options.num_samples}, but {source} has only "
            f"{len(samples)} usable sample(s) (with an image){after}; give --num-samples {len(samples)} or fewer, "
            "or leave it out to use them all")
    check_images(samples)
    return CalibrationSet(options, tuple(samples))


def check_answers(calibration: CalibrationSet, scorer: str) -> None:
    """Refuse, before a model loads, a set without any answer for a scorer that measures the loss on answers."""
    if not any(sample.answer is not None for sample in calibration.samples):
        source = "the bundled toy set" if calibration.options.source in (None, "toy") else calibration.options.source
        raise CalibrationError(
            f"{scorer} measures the loss on the calibration answers, but none of the {len(calibration.samples)} "
            f"sample(s) of {source} has an answer; give samples with answers (a reply turn, or 'answer'), or a method "
            "that needs none (short-lvlm, block-influence, angular)")


def calibration_set(calibration: Calibration | CalibrationSet | Sequence[CalibrationSample] | None,
                    model_name: str | None = None) -> CalibrationSet:
    """A CalibrationSet from options (read now), a set (as is), or a list of samples (all of them)."""
    if calibration is None:
        raise CalibrationError("this needs calibration data: give Calibration(source=...) or a list of samples")
    if isinstance(calibration, CalibrationSet):
        return calibration
    if isinstance(calibration, Calibration):
        return read_calibration(calibration, model_name)
    return CalibrationSet(Calibration(source=SAMPLES_SOURCE), tuple(calibration))
