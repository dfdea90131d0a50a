"""Benchmarks for `shortlvlm eval`: load the official local layout, prompt LLaVA-1.5 style, score officially.

The generation loop calls `load_benchmark`, answers each `BenchSample.question` about
`BenchSample.load_image()`, and passes `{sample.id: answer_text}` to `score_benchmark`.
A sample without a prediction is scored as an empty answer and counted in `num_missing`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import ModuleType

from shortlvlm.data.benchmarks import aokvqa, mmbench, mme, pope, scienceqa, seed
from shortlvlm.data.benchmarks.base import BenchSample
from shortlvlm.data.errors import BenchmarkDataError

REGISTRY: dict[str, ModuleType] = {
    module.NAME: module for module in (pope, mme, mmbench, scienceqa, seed, aokvqa)
}
BENCHMARKS: tuple[str, ...] = tuple(REGISTRY)


def _benchmark(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise BenchmarkDataError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return REGISTRY[name]


def expected_layout(name: str) -> str:
    """The files and folders `load_benchmark(name, ...)` expects under its data folder."""
    return _benchmark(name).LAYOUT


def load_benchmark(name: str, data_root: str | Path, limit: int | None = None) -> list[BenchSample]:
    """The benchmark's samples read from `data_root` (its folder in LLaVA's playground/data/eval layout)."""
    module = _benchmark(name)
    if limit is not None and limit < 1:
        raise BenchmarkDataError(f"limit must be a positive number of questions, got {limit}")
    root = Path(data_root).expanduser().absolute()
    if not root.is_dir():
        raise BenchmarkDataError(f"{name} data folder not found: {root}\nIt should contain:\n{module.LAYOUT}")
    samples = module.load(root, limit)
    if not samples:
        raise BenchmarkDataError(f"no {name} questions found under {root}\nExpected layout:\n{module.LAYOUT}")
    duplicates = [sample_id for sample_id, count in Counter(s.id for s in samples).items() if count > 1]
    if duplicates:
        raise BenchmarkDataError(f"{name} under {root}: duplicate question ids {duplicates[:5]}")
    return samples


def score_benchmark(name: str, samples: list[BenchSample], predictions: dict[str, str]) -> dict:
    """The official metrics of `name` for `predictions` ({sample id: generated text}); rates are percentages."""
    result = _benchmark(name).score(samples, predictions)
    missing = sum(sample.id not in predictions for sample in samples)
    return {"benchmark": name, "num_samples": len(samples), "num_missing": missing, **result}


__all__ = [
    "BENCHMARKS",
    "BenchSample",
    "BenchmarkDataError",
    "expected_layout",
    "load_benchmark",
    "score_benchmark",
]
