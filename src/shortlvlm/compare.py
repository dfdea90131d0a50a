"""`shortlvlm compare`: every layer-selection rule on the same calibration data, side by side.

Each scorer ranks the layers once (one plan per scorer, saved under plans/); every method then
prunes a fresh copy of the model at every ratio from its plan (compensating where asked), and the
result is evaluated on the benchmark. The unpruned model is evaluated once as the reference.
Progress is saved after every step (results.json, written atomically), so a killed run continues
where it stopped when started again with the same arguments.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shortlvlm.checkpoint import weights_fingerprint, write_text_atomically
from shortlvlm.data.calibration import CalibrationSample, calibration_hash
from shortlvlm.errors import ShortLVLMError
from shortlvlm.plan import Plan
from shortlvlm.pruning import COMPENSATIONS, layers_to_remove, needs_calibration, prune, score
from shortlvlm.scoring import METHODS, NEEDS_COUNT

RESULTS = "results.json"
# The number a benchmark is judged by (a path into its metrics), as the paper reports it.
HEADLINE = {
    "shapes": ("accuracy",),
    "pope": ("mean", "f1"),
    "mme": ("total",),
    "mmbench": ("circular_accuracy",),
    "seed-img": ("accuracy",),
    "scienceqa-img": ("accuracy",),
    "aokvqa": ("mc_accuracy",),
}
DEFAULT_METHODS = ("short-lvlm", "tis-cosine", "block-influence", "angular", "sleb", "taylor", "ppl", "last",
                   "random")


class CompareError(ShortLVLMError):
    """A comparison request is invalid, or its output folder holds a different comparison."""


@dataclass(frozen=True)
class MethodSpec:
    """One compared setting: a method (scorer or recipe) with a compensation."""

    label: str
    method: str
    compensation: str

    @property
    def scorer(self) -> str:
        return METHODS[self.method][0]

    @property
    def needs_calibration(self) -> bool:
        return needs_calibration(self.scorer, self.compensation)


def parse_methods(text: str | list[str]) -> list[MethodSpec]:
    """'short-lvlm,block-influence+scp,sleb' -> specs; `+none`/`+scp` overrides the compensation."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise CompareError("--methods is empty; name at least one, e.g. short-lvlm,block-influence")
    specs = []
    for item in items:
        method, _, compensation = item.partition("+")
        if method not in METHODS:
            raise CompareError(f"unknown method {method!r} in --methods; choose from: {', '.join(sorted(METHODS))}")
        compensation = compensation or METHODS[method][1]
        if compensation not in COMPENSATIONS:
            raise CompareError(f"unknown compensation {compensation!r} in {item!r}; use +none or +scp")
        specs.append(MethodSpec(item, method, compensation))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise CompareError(f"--methods lists a setting twice: {labels}")
    return specs


def parse_ratios(text: str | list[float]) -> list[float]:
    """'0.1,0.2,0.3' -> [0.1, 0.2, 0.3], each strictly between 0 and 1, no repeats."""
    try:
        ratios = [float(t) for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    except ValueError as err:
        raise CompareError(f"--ratios takes comma-separated fractions such as 0.1,0.2,0.3 ({err})") from err
    bad = [r for r in ratios if not 0 < r < 1]
    if not ratios or bad:
        raise CompareError(f"--ratios must be fractions strictly between 0 and 1, got {text!r}")
    if len(set(ratios)) != len(ratios):
        raise CompareError(f"--ratios lists a ratio twice: {ratios}")
    return sorted(ratios)


def headline(bench: str, metrics: dict) -> float:
    """The benchmark's main number from its metrics (NaN if absent)."""
    value = metrics
    for key in HEADLINE.get(bench, ("accuracy",)):
        value = value.get(key, math.nan) if isinstance(value, dict) else math.nan
    return float(value) if isinstance(value, (int, float)) else math.nan


def _atomic_json(path: Path, data: dict) -> None:
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


def _ratio_key(ratio: float) -> str:
    return f"{ratio:g}"


class Comparison:
    """The results file of one comparison: created, or resumed if its configuration matches."""

    def __init__(self, out: Path, config: dict, *, overwrite: bool):
        self.out, self.path = out, out / RESULTS
        if out.exists() and not out.is_dir():
            raise CompareError(f"--out {out} exists and is not a directory; choose another --out")
        existing = json.loads(self.path.read_text()) if self.path.exists() else None
        if existing is not None and existing.get("config") != config and not overwrite:
            changed = sorted(k for k in config if existing.get("config", {}).get(k) != config[k])
            raise CompareError(
                f"{out} holds a comparison with different settings ({', '.join(changed) or 'format'}); "
                "resume it with the same arguments, choose another --out, or pass --overwrite to start over"
            )
        if existing is None or existing.get("config") != config:
            existing = {"config": config, "scoring": {}, "unpruned": None, "cells": {}}
        self.data = existing
        (out / "plans").mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        _atomic_json(self.path, self.data)

    def plan_path(self, scorer: str) -> Path:
        return self.out / "plans" / f"{scorer}.json"

    def cell(self, label: str, ratio: float) -> dict | None:
        return self.data["cells"].get(label, {}).get(_ratio_key(ratio))

    def set_cell(self, label: str, ratio: float, row: dict) -> None:
        self.data["cells"].setdefault(label, {})[_ratio_key(ratio)] = row
        self.save()


def run_compare(
    load_model: Callable[[], tuple],
    model_name: str,
    out: str | Path,
    *,
    methods: list[MethodSpec],
    ratios: list[float],
    bench: str,
    samples: list,
    calibration: list[CalibrationSample] | None,
    data: str | None = None,
    batch_size: int = 8,
    eval_batch_size: int = 16,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    make_adapter: Callable | None = None,
) -> dict:
    """Score once per scorer, prune every (method, ratio) from a fresh load, evaluate; resumable."""
    from shortlvlm.data.encode import encode_calibration
    from shortlvlm.models import get_adapter as default_adapter
    from shortlvlm.pipeline import evaluate

    get_adapter = make_adapter or default_adapter
    needs_data = any(m.needs_calibration for m in methods)
    if needs_data and not calibration:
        raise CompareError("the compared methods need calibration data (--calib; bundled for toy)")
    config = {"model": model_name, "weights": weights_fingerprint(model_name), "bench": bench, "data": data, "num_questions": len(samples),
              "methods": [m.label for m in methods], "ratios": ratios, "seed": seed,
              "calibration": {"num_samples": len(calibration or []),
                              "hash": calibration_hash(calibration) if calibration else None}}
    results = Comparison(Path(out), config, overwrite=overwrite)
    model = processor = None
    encoded: list = []

    def calibration_batches(processor, adapter):
        """The calibration set encoded once (batches are plain tensors, shared by every model)."""
        if needs_data and not encoded:
            encoded.extend(encode_calibration(calibration, processor, adapter, batch_size=batch_size,
                                              progress=progress))
        return encoded or None

    def scoring_model():
        nonlocal model, processor
        if model is None:
            model, processor = load_model()
        return model, processor

    for scorer in dict.fromkeys(m.scorer for m in methods):
        if scorer in results.data["scoring"] and results.plan_path(scorer).exists():
            continue
        model, processor = scoring_model()
        adapter = get_adapter(model)
        log(f"scoring layers with {scorer} ...")
        num_remove = max(layers_to_remove(r, adapter) for r in ratios) if scorer in NEEDS_COUNT else None
        plan = score(model, processor, calibration or [], scorer, num_remove=num_remove, seed=seed,
                     adapter=adapter, batches=calibration_batches(processor, adapter), source=model_name,
                     progress=progress)
        _atomic_json(results.plan_path(scorer), plan.to_dict())
        results.data["scoring"][scorer] = {"seconds": plan.params["scoring_seconds"],
                                           "removal_order": plan.params["removal_order"]}
        results.save()

    if results.data["unpruned"] is None:
        model, processor = scoring_model()
        log("evaluating the unpruned model ...")
        started = time.perf_counter()
        metrics, _ = evaluate(model, processor, bench, samples, batch_size=eval_batch_size, progress=progress)
        results.data["unpruned"] = {"metrics": metrics, "score": headline(bench, metrics),
                                    "eval_seconds": round(time.perf_counter() - started, 1)}
        results.save()
    del model, processor

    todo = [(m, r) for m in methods for r in ratios if results.cell(m.label, r) is None]
    for index, (spec, ratio) in enumerate(todo, 1):
        log(f"[{index}/{len(todo)}] {spec.label} at {_ratio_key(ratio)} ...")
        plan = Plan.load(results.plan_path(spec.scorer))
        plan.method = spec.method
        model, processor = load_model()
        adapter = get_adapter(model)
        cell_batches = calibration_batches(processor, adapter) if spec.compensation == "scp" else None
        started = time.perf_counter()
        model, pruned = prune(model, processor, calibration, ratio, spec.method, spec.compensation, plan=plan,
                              adapter=adapter, batches=cell_batches, source=model_name, progress=progress)
        prune_seconds = time.perf_counter() - started
        started = time.perf_counter()
        metrics, _ = evaluate(model, processor, bench, samples, batch_size=eval_batch_size, progress=progress)
        results.set_cell(spec.label, ratio, {
            "removed_layers": pruned.removed_layers, "metrics": metrics, "score": headline(bench, metrics),
            "prune_seconds": round(prune_seconds, 2), "eval_seconds": round(time.perf_counter() - started, 1),
        })
        del model, processor
    write_report(results.data, Path(out))
    return results.data


def markdown_table(data: dict) -> str:
    """Accuracy (and retention of the unpruned score) per method x ratio, plus scoring time."""
    config = data["config"]
    ratios = config["ratios"]
    base = data["unpruned"]["score"]
    scorers = {spec.label: spec.scorer for spec in parse_methods(config["methods"])}
    lines = [f"| method | {' | '.join(f'{r:.0%}' for r in ratios)} | scoring time (s) |",
             "|---" * (len(ratios) + 2) + "|",
             f"| unpruned | {' | '.join(f'{base:.1f}' for _ in ratios)} | - |"]
    for label in config["methods"]:
        cells = []
        for ratio in ratios:
            row = data["cells"].get(label, {}).get(_ratio_key(ratio))
            cells.append("…" if row is None else f"{row['score']:.1f} ({100 * row['score'] / base:.0f}%)")
        seconds = data["scoring"].get(scorers[label], {}).get("seconds")
        lines.append(f"| {label} | {' | '.join(cells)} | {'-' if seconds is None else f'{seconds:.1f}'} |")
    return "\n".join(lines)


def ratio_plot(data: dict, path: Path) -> None:
    """Benchmark score versus pruning ratio, one line per method, the unpruned score dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = data["config"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label in config["methods"]:
        points = [(r, data["cells"][label][_ratio_key(r)]["score"]) for r in config["ratios"]
                  if _ratio_key(r) in data["cells"].get(label, {})]
        if points:
            style = "-" if label.startswith("short-lvlm") else "--"
            ax.plot([100 * r for r, _ in points], [s for _, s in points], style, marker="o", label=label)
    ax.set_xticks([100 * r for r in config["ratios"]])
    ax.axhline(data["unpruned"]["score"], color="black", linestyle=":", label="unpruned")
    ax.set_xlabel("layers removed (%)")
    ax.set_ylabel(f"{config['bench']} {'/'.join(HEADLINE.get(config['bench'], ('accuracy',)))}")
    ax.set_title(f"{config['model']} on {config['bench']} ({config['num_questions']} questions)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(data: dict, out: Path) -> None:
    """results.md (table) and accuracy_vs_ratio.png beside results.json."""
    config = data["config"]
    metric = "/".join(HEADLINE.get(config["bench"], ("accuracy",)))
    text = (f"# Layer pruning compared: {config['model']} on {config['bench']}\n\n"
            f"{config['num_questions']} questions, metric: {metric} (retention = pruned / unpruned). "
            f"Calibration: {config['calibration']['num_samples']} samples (hash {config['calibration']['hash']}).\n\n"
            f"{markdown_table(data)}\n\n![score versus ratio](accuracy_vs_ratio.png)\n")
    write_text_atomically(out / "results.md", text)
    tmp = out / ".accuracy_vs_ratio.tmp.png"
    ratio_plot(data, tmp)
    tmp.replace(out / "accuracy_vs_ratio.png")
