"""End-to-end jobs composed from the library pieces: the CLI and demo call these."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from shortlvlm.checkpoint import VerifyReport, save, verify, write_text_atomically
from shortlvlm.jsontext import loads_json
from shortlvlm.models import Adapter, get_adapter
from shortlvlm.plan import Plan
from shortlvlm.surgery import drop_layers, validate_layer_selection


@dataclass
class PruneResult:
    """What a pruning job produced."""

    out_dir: Path
    plan: Plan
    params_before: int
    params_after: int
    report: VerifyReport | None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_layers_to_checkpoint(
    model: nn.Module,
    processor: object | None,
    layers: list[int],
    out_dir: str | os.PathLike,
    *,
    adapter: Adapter | None = None,
    overwrite: bool = False,
    verify_checkpoint: bool = True,
    verify_inputs: dict[str, torch.Tensor] | None = None,
    trust_remote_code: bool = False,
    source: str = "",
) -> PruneResult:
    """Remove the given layers, save a standard checkpoint, and verify it before it lands in out_dir."""
    adapter = adapter or get_adapter(model)
    removed = validate_layer_selection(layers, adapter)
    plan = Plan(
        method="manual",
        num_layers_before=adapter.num_layers,
        removed_layers=removed,
        model={"name_or_path": source, "class": type(model).__name__, "adapter": adapter.spec.name},
    )
    params_before = count_parameters(model)
    drop_layers(model, removed, adapter)
    out, report = write_checkpoint(model, processor, plan, out_dir, overwrite=overwrite,
                                   verify_checkpoint=verify_checkpoint, verify_inputs=verify_inputs,
                                   trust_remote_code=trust_remote_code)
    return PruneResult(out, plan, params_before, count_parameters(model), report)


def write_checkpoint(
    model: nn.Module,
    processor: object | None,
    plan: Plan,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    verify_checkpoint: bool = True,
    verify_inputs: dict[str, torch.Tensor] | None = None,
    trust_remote_code: bool = False,
) -> tuple[Path, VerifyReport | None]:
    """Save a pruned model atomically; with verification, it lands only if the reload reproduces it."""
    reports: list[VerifyReport] = []

    def check(tmp: Path) -> None:
        reports.append(verify(model, tmp, verify_inputs, trust_remote_code=trust_remote_code))

    out = save(model, processor, plan, out_dir, overwrite=overwrite, check=check if verify_checkpoint else None)
    return out, reports[0] if reports else None


def benchmark_samples(bench: str, data: str | os.PathLike | None = None, limit: int | None = None) -> list:
    """The questions of a benchmark (`shapes` is generated; the others are read from `data`)."""
    from shortlvlm.data.benchmarks import load_benchmark
    from shortlvlm.errors import ShortLVLMError
    from shortlvlm.toy import bench as shapes

    if bench == shapes.NAME:
        return shapes.load_shapes(limit)
    if data is None:
        raise ShortLVLMError(f"--data is required for {bench}: the folder holding its files")
    return load_benchmark(bench, data, limit)


def evaluate(
    model: nn.Module, processor, bench: str, samples: list, *, batch_size: int = 16, progress: bool = True,
    resume_file: str | os.PathLike | None = None, resume_key: dict | None = None,
) -> tuple[dict, dict[str, str]]:
    """Answer benchmark questions (from benchmark_samples) and score them: (metrics, {id: answer}).

    With `resume_file`, every answered batch is appended to it (JSON lines, the first holding
    `resume_key`); answers already there for the same key are reused, so a killed run continues.
    """
    from shortlvlm.data.benchmarks import score_benchmark
    from shortlvlm.eval.generate import answer_samples
    from shortlvlm.toy import bench as shapes

    if resume_file is None:
        predictions = answer_samples(model, processor, samples, batch_size=batch_size, progress=progress)
    else:
        predictions = _answer_resumably(model, processor, samples, Path(resume_file), resume_key or {},
                                        batch_size=batch_size, progress=progress)
    if bench == shapes.NAME:
        return shapes.score_shapes(samples, predictions), predictions
    return score_benchmark(bench, samples, predictions), predictions


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


def _answer_resumably(model, processor, samples, path: Path, key: dict, *, batch_size: int, progress: bool):
    from shortlvlm.eval.generate import answer_samples

    known = {s.id for s in samples}
    predictions = {k: v for k, v in read_partial_answers(path, key).items() if k in known}
    todo = [s for s in samples if s.id not in predictions]
    if predictions and progress:
        print(f"resuming: {len(predictions)} of {len(samples)} answers found in {path}", file=sys.stderr)
    # Rewrite header + kept answers atomically (a kill here loses nothing), then append as we go.
    records = [{"key": key}, *({"id": i, "answer": a} for i, a in predictions.items())]
    write_text_atomically(path, "".join(json.dumps(r) + "\n" for r in records))
    with path.open("a") as handle:
        chunk = batch_size * 4
        for start in tqdm(range(0, len(todo), chunk), desc="answer", unit="chunk", disable=not progress):
            answers = answer_samples(model, processor, todo[start:start + chunk], batch_size=batch_size,
                                     progress=False)
            for sample_id, answer in answers.items():
                handle.write(json.dumps({"id": sample_id, "answer": answer}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            predictions.update(answers)
    return predictions
