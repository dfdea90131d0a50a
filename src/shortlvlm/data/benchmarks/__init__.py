"""Benchmarks for `shortlvlm eval` and `compare`: load, prompt LLaVA-1.5 style, score officially.

The registry is the only way to a benchmark. Each module has NAME, LAYOUT (the files it expects),
NEEDS_DATA (whether it reads a data folder; `shapes`, the toy task, is generated), optionally
`default_root()` (the folder used when none is given: an installed package's data), HEADLINE (the
metric a comparison reports), `load(root, limit)` and `score(samples, predictions, lenient)`.
The generation loop calls `load_benchmark`, answers each `BenchSample.question` about
`BenchSample.load_image()`, and passes `{sample.id: answer_text}` to `score_benchmark`.
A sample without a prediction is scored as its official script scores a missing answer and counted
in `num_missing`. Scores follow the official scripts' answer parsing bit for bit; `lenient=True`
(`shortlvlm eval --lenient`) swaps in forgiving readers and the metrics then say
`"parser": "lenient"`. MMBench alone has a policy for answers its rules cannot read
(`mmbench_policy`: "exact", the default, or "lmms-eval"; `shortlvlm eval --mmbench-policy`), which
its metrics record under the same name. Where an official script would stop with an error (a
division by zero, an empty metric), the formula's value is returned and `notes` says so.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from types import ModuleType

from shortlvlm.data.benchmarks import aokvqa, easyvqa, mmbench, mme, pope, scienceqa, seed, shapes
from shortlvlm.data.benchmarks.base import BenchSample
from shortlvlm.data.errors import BenchmarkDataError

REGISTRY: dict[str, ModuleType] = {
    module.NAME: module for module in (shapes, pope, mme, mmbench, scienceqa, seed, aokvqa, easyvqa)
}
NAMES: tuple[str, ...] = tuple(REGISTRY)  # every benchmark, `shapes` (the default) first
BENCHMARKS: tuple[str, ...] = tuple(name for name, module in REGISTRY.items() if module.NEEDS_DATA)  # read from files


def _benchmark(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise BenchmarkDataError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return REGISTRY[name]


def expected_layout(name: str) -> str:
    """The files and folders `load_benchmark(name, ...)` expects under its data folder."""
    return _benchmark(name).LAYOUT


def load_benchmark(name: str, data_root: str | Path | None = None, limit: int | None = None) -> list[BenchSample]:
    """The benchmark's samples read from `data_root` (its folder in LLaVA's playground/data/eval layout)."""
    module = _benchmark(name)
    if limit is not None and limit < 1:
        raise BenchmarkDataError(f"limit must be a positive number of questions, got {limit}")
    if not module.NEEDS_DATA:
        return module.load(None, limit)
    if data_root is None and hasattr(module, "default_root"):  # data shipped in an installed package
        data_root = module.default_root()
    if data_root is None:
        hint = f" (or `pip install {name}`, which ships them)" if hasattr(module, "default_root") else ""
        raise BenchmarkDataError(f"--data is required for {name}: the folder holding its files{hint}")
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


def check_scoring(name: str, *, lenient: bool = False, mmbench_policy: str = "exact") -> None:
    """Refuse a scoring request that cannot mean anything, before any answer is generated."""
    _benchmark(name)
    if mmbench_policy not in mmbench.POLICIES:
        raise BenchmarkDataError(
            f"unknown --mmbench-policy {mmbench_policy!r}; choose one of: {', '.join(mmbench.POLICIES)}")
    if mmbench_policy == "exact":
        return
    if name != mmbench.NAME:
        raise BenchmarkDataError(
            f"--mmbench-policy {mmbench_policy} applies to --bench mmbench only; {name} reads answers by its "
            "own rules: drop --mmbench-policy")
    if lenient:
        raise BenchmarkDataError(
            f"--mmbench-policy {mmbench_policy} reads the answers MMBench's rules cannot read, but --lenient "
            "replaces those rules altogether: give one of the two")


def score_benchmark(
    name: str, samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False,
    mmbench_policy: str = "exact",
) -> dict:
    """The official metrics of `name` for `predictions` ({sample id: generated text}); rates are percentages."""
    check_scoring(name, lenient=lenient, mmbench_policy=mmbench_policy)
    policy = {"policy": mmbench_policy} if name == mmbench.NAME else {}
    result = _benchmark(name).score(samples, predictions, lenient=lenient, **policy)
    missing = sum(sample.id not in predictions for sample in samples)
    parser = "lenient" if lenient else "official"
    return {"benchmark": name, "num_samples": len(samples), "num_missing": missing, "parser": parser, **result}


def headline(name: str, metrics: dict) -> float:
    """The benchmark's main number from its metrics (NaN if absent)."""
    value = metrics
    for key in headline_path(name):
        value = value.get(key, math.nan) if isinstance(value, dict) else math.nan
    return float(value) if isinstance(value, (int, float)) else math.nan


def headline_path(name: str) -> tuple[str, ...]:
    """Where a benchmark's main number sits in its metrics (accuracy for unknown names)."""
    return REGISTRY[name].HEADLINE if name in REGISTRY else ("accuracy",)


__all__ = [
    "BENCHMARKS",
    "NAMES",
    "BenchSample",
    "BenchmarkDataError",
    "check_scoring",
    "expected_layout",
    "headline",
    "load_benchmark",
    "score_benchmark",
]
