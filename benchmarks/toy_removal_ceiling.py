"""How much of the toy's accuracy can any 30% layer removal keep? An exhaustive reference.

    .venv/bin/python benchmarks/toy_removal_ceiling.py [--select 300] [--limit 1200] [--pool 15] [--top 8]

Every scorer (Short-LVLM, SLEB, ...) picks one set of 5 of the toy's 16 layers to remove at 30%.
This script measures the best set there is, so the scorers can be judged against it:
1. each layer removed alone, on a selection split (calibration-split questions 100000+, disjoint
   from the bundled 256 calibration samples and from the test split);
2. every 5-layer set drawn from the `--pool` layers whose single removal costs the least, on the
   selection split (the default 15 leaves out only the layer whose removal costs most, layer 0:
   3003 sets, ~50 min on 2 CPU cores; `--pool 12`: 792 sets, ~14 min);
3. the `--top` best sets re-measured on the shapes test split (`--limit` questions), with SCP
   (alpha 1 and "fit") and with a least-squares linear map (a full-rank d x d generalisation of
   SCP's edit, fitted on the same calibration statistics) on the best one: how much any linear
   weight edit of the kept layers can bridge.
Writes benchmarks/results/toy_removal_ceiling.{json,md}; resumable (finished sets are kept).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from shortlvlm import drop_layers, get_adapter, load
from shortlvlm.compensation import SCP, compensate, measure_gaps, removed_runs, top_subspace, writer_names
from shortlvlm.data.benchmarks.shapes import BenchSample, load_shapes
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.eval.evaluate import evaluate
from shortlvlm.importance import TIS

SELECT_START = 100_000


def selection_split(size: int) -> list[BenchSample]:
    """Shapes questions from the calibration split, far past the bundled calibration samples."""
    return load_shapes(size, split="calibration", start=SELECT_START)


def in_pool(key: str, pool) -> bool:
    """Whether a measured set (its JSON key) uses only layers of the searched pool."""
    return set(json.loads(key)) <= set(pool)


def accuracy(model, processor, samples) -> tuple[float, dict]:
    metrics, _ = evaluate(model, processor, "shapes", samples, batch_size=100)
    return metrics["accuracy"], metrics["per_family"]


@torch.no_grad()
def linear_bridge(model, batches, removed: list[int], rank: int | None) -> None:
    """Edit each run's kept layer below with W <- (I + T) W, T the least-squares map from the MLP output
    to the gap (restricted to the top-`rank` gap subspace, or full rank with None). Reference only."""
    adapter = get_adapter(model)
    names = writer_names(adapter, "mlp")
    runs = removed_runs(removed)
    stats = measure_gaps(model, adapter, batches, removed, SCP(alpha="fit", writers="mlp", tis=TIS()))
    dim = adapter.config.get_text_config().hidden_size
    for run in runs:
        if run.below is None:
            continue
        cross, gram = stats[f"cross.{run.below}"], stats[f"gram.{run.below}"]
        basis = top_subspace(stats[f"hth.{run.below}"], rank or dim)[0]
        inner = basis.T @ gram @ basis
        inner += 1e-6 * torch.trace(inner) / len(inner) * torch.eye(len(inner), dtype=inner.dtype)
        edit = basis @ (basis.T @ cross.T @ basis) @ torch.linalg.inv(inner) @ basis.T
        for name, module in adapter.residual_writers(run.below).items():
            if name in names:
                weight = module.weight.double()
                module.weight.copy_((weight + edit @ weight).to(module.weight.dtype))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", type=int, default=300, help="selection-split questions (default 300)")
    parser.add_argument("--limit", type=int, default=1200, help="test questions for the best sets (default 1200)")
    parser.add_argument("--pool", type=int, default=15, help="layers searched: the N cheapest single removals")
    parser.add_argument("--top", type=int, default=8, help="best sets re-measured on the test split")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "toy_removal_ceiling.json"
    config = {"select": args.select, "limit": args.limit, "ratio": args.ratio}  # what a measured set depends on
    results = json.loads(path.read_text()) if path.exists() else {}
    if {k: v for k, v in results.get("config", config).items() if k != "pool"} != config:
        raise SystemExit(f"{path} was measured with {results['config']}; delete it or use those options")
    results["config"] = {**config, "pool": args.pool}  # a wider pool reuses the sets already measured

    def save() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(path)

    base, processor = load("toy")
    num_layers = get_adapter(base).num_layers
    count = round(args.ratio * num_layers)
    select = selection_split(args.select)

    def measure(layers: list[int], samples) -> tuple[float, dict]:
        model = copy.deepcopy(base)
        if layers:
            drop_layers(model, layers)
        return accuracy(model, processor, samples)

    single = results.setdefault("single", {})
    if "none" not in single:
        single["none"] = measure([], select)[0]
    for layer in range(num_layers):
        if str(layer) not in single:
            single[str(layer)] = measure([layer], select)[0]
            save()
    pool = sorted(sorted(range(num_layers), key=lambda i: -single[str(i)])[:args.pool])
    results["pool_layers"] = pool
    sets = results.setdefault("sets", {})
    started = time.perf_counter()
    for combo in tqdm(list(itertools.combinations(pool, count)), desc="sets", unit="set"):
        key = json.dumps(list(combo))
        if key not in sets:
            sets[key] = measure(list(combo), select)[0]
            if time.perf_counter() - started > 30:
                save()
                started = time.perf_counter()
    save()

    ranked = sorted((k for k in sets if in_pool(k, pool)), key=lambda k: -sets[k])
    tested = results.setdefault("test", {})
    test = load_shapes(args.limit)
    if "none" not in tested:
        tested["none"] = dict(zip(("accuracy", "per_family"), measure([], test), strict=True))
    for key in ranked[:args.top]:
        if key not in tested:
            tested[key] = dict(zip(("accuracy", "per_family"), measure(json.loads(key), test), strict=True))
            save()
    best = json.loads(ranked[0])
    bridges = results.setdefault("bridges", {})
    calib = toy_calibration()
    batches = encode_calibration(calib, processor, get_adapter(base))
    for label in ("scp alpha=1", "scp alpha=fit", "least squares, rank 8", "least squares, full rank"):
        if bridges.get(label, {}).get("removed") == best:
            continue
        model = copy.deepcopy(base)
        if label.startswith("scp"):
            compensate(model, get_adapter(model), batches, best, SCP(alpha="fit" if label.endswith("fit") else 1.0))
        else:
            linear_bridge(model, batches, best, 8 if "rank 8" in label else None)
        drop_layers(model, best)
        acc, families = accuracy(model, processor, test)
        bridges[label] = {"removed": best, "accuracy": acc, "per_family": families}
        save()
    write_report(results, out, count)


def write_report(results: dict, out: Path, count: int) -> None:
    cfg = results["config"]
    single, sets, tested = results["single"], results["sets"], results["test"]
    pool = results["pool_layers"]
    base = tested["none"]["accuracy"]
    lines = ["# The best 30% layer removal on the toy (exhaustive reference)", "",
             f"Command: `.venv/bin/python benchmarks/toy_removal_ceiling.py --select {cfg['select']} "
             f"--limit {cfg['limit']} --pool {cfg['pool']}`", "",
             f"Selection split: {cfg['select']} shapes questions from the calibration split (index "
             f"{SELECT_START}+; disjoint from the calibration set and the test split). Unpruned: "
             f"{single['none']:.2f}% there, {base:.2f}% on {cfg['limit']} test questions.", "",
             "## Each layer removed alone (selection split, accuracy %)", "",
             "| layer | " + " | ".join(str(i) for i in range(len(single) - 1)) + " |",
             "|---|" + "---|" * (len(single) - 1),
             "| accuracy | " + " | ".join(f"{single[str(i)]:.1f}" for i in range(len(single) - 1)) + " |", "",
             f"Searched: every {count}-layer set from the {cfg['pool']} cheapest layers {results['pool_layers']} "
             f"({sum(in_pool(k, pool) for k in sets)} sets).", "",
             "## Best sets (selection split, then test split)", "",
             "| removed | selection | test | test retention |", "|---|---|---|---|"]
    for key in sorted(sets, key=lambda k: -sets[k]):
        if key in tested and in_pool(key, pool):
            acc = tested[key]["accuracy"]
            lines.append(f"| {key} | {sets[key]:.2f} | {acc:.2f} | {100 * acc / base:.1f}% |")
    lines += ["", "## Bridging the best set's gaps with weight edits (test split)", "",
              "| edit of the kept layers | accuracy | retention |", "|---|---|---|"]
    best_key = max((k for k in sets if in_pool(k, pool)), key=lambda k: sets[k])
    lines.append(f"| none ({best_key}) | {tested[best_key]['accuracy']:.2f} | "
                 f"{100 * tested[best_key]['accuracy'] / base:.1f}% |")
    for label, entry in results["bridges"].items():
        lines.append(f"| {label} | {entry['accuracy']:.2f} | {100 * entry['accuracy'] / base:.1f}% |")
    text = "\n".join(lines) + "\n"
    (out / "toy_removal_ceiling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
