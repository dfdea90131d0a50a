"""Short-LVLM ablation on a shapes model: each component against its ablation, and the open parameters.

    .venv/bin/python benchmarks/ablation_short_lvlm.py [--model toy] [--num-samples N] [--sweeps all|none]
        [--limit 1200] [--out benchmarks/results]

Writes ablation_short_lvlm.json (resumable: finished runs are kept and skipped on restart),
ablation_short_lvlm.md (tables) and ablation_short_lvlm.png (accuracy vs ratio); for another
`--model` (smol-llava) the names end in _<model>. Calibration: the bundled shapes set (256 samples,
calibration split; the first `--num-samples` of it); evaluation: the shapes test split.
Grid:
- main 2x2 at 10/20/30/40%: {tis-cosine (important tokens), plain cosine (all tokens)} x {none, scp},
  plus tis-cosine with the shared chat template kept among the text tokens (the rule before
  `tis_skip_template`);
- sweeps at 30%: tis_top_p, scp rank k, scp alpha (incl. "fit"), scp writers, per-token
  normalised gaps, iterative scoring.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from shortlvlm import (
    SCP,
    TIS,
    Calibration,
    Provenance,
    TISCosine,
    evaluate,
    get_adapter,
    load,
    load_benchmark,
    prune,
)
from shortlvlm.data.calibration_set import read_calibration
from shortlvlm.data.encode import encode_calibration

RATIOS = (0.1, 0.2, 0.3, 0.4)
ARMS = {
    "tis-cosine + scp (Short-LVLM)": {"tis_tokens": "important", "compensation": "scp"},
    "tis-cosine": {"tis_tokens": "important", "compensation": "none"},
    "cosine, all tokens + scp": {"tis_tokens": "all", "compensation": "scp"},
    "cosine, all tokens": {"tis_tokens": "all", "compensation": "none"},
    "tis-cosine, chat template kept": {"tis_tokens": "important", "tis_skip_template": False, "compensation": "none"},
}


def sweeps() -> list[tuple[str, str, dict]]:
    """(group, label, prune kwargs) at 30%."""
    runs = [("tis_top_p", f"top_p={p}", {"tis_top_p": p, "compensation": "none"}) for p in (0.1, 0.25, 0.5, 0.75, 1.0)]
    runs += [("tis_top_p", "joint top_p=0.5", {"tis_joint": True, "compensation": "none"})]
    runs += [("scp rank k", f"k={k}", {"scp_rank": k, "compensation": "scp"}) for k in (1, 2, 4, 8, 16, 32)]
    runs += [("scp alpha", f"alpha={a}", {"scp_alpha": a, "compensation": "scp"})
             for a in (-0.5, 0.5, 1.0, 2.0, "fit")]
    runs += [("scp writers", f"writers={w}", {"scp_writers": w, "compensation": "scp"})
             for w in ("mlp", "attn", "both")]
    runs += [("scp normalised gaps", f"normalize, alpha={a}", {"scp_normalize": True, "scp_alpha": a,
                                                               "compensation": "scp"}) for a in (1.0, "fit")]
    runs += [("scoring", "iterative", {"iterative": True, "compensation": "none"})]
    return runs


def method_options(kwargs: dict) -> tuple[TISCosine, SCP | None]:
    """The scorer and compensation a run's kwargs (the names results.json keeps) describe."""
    tis = TIS(tokens=kwargs.get("tis_tokens", "important"), top_p=kwargs.get("tis_top_p", TIS().top_p),
              joint=kwargs.get("tis_joint", False), skip_template=kwargs.get("tis_skip_template", True))
    scp = SCP(rank=kwargs.get("scp_rank", SCP().rank), alpha=kwargs.get("scp_alpha", SCP().alpha),
              writers=kwargs.get("scp_writers", SCP().writers), normalize=kwargs.get("scp_normalize", False))
    return (TISCosine(tis=tis, iterative=kwargs.get("iterative", False)),
            scp if kwargs["compensation"] == "scp" else None)


def planned_runs(with_sweeps: bool) -> dict[str, tuple[dict, float]]:
    """Every pruned run in the order they run, by key in results.json: (prune kwargs, ratio). The
    components at 30% and the sweeps (all at 30%) come first, so that a run stopped early has the
    comparisons at the paper's ratio."""
    grid = {f"{arm} @ {ratio}": (kwargs, ratio) for arm, kwargs in ARMS.items() for ratio in RATIOS}
    runs = {key: entry for key, entry in grid.items() if entry[1] == 0.3}
    runs.update({f"{group}: {label} @ 0.3": (kwargs, 0.3)
                 for group, label, kwargs in (sweeps() if with_sweeps else [])})
    runs.update(grid)
    return runs


def model_identity(removed_layers: list[int], compensation: SCP | None) -> str:
    """What determines the pruned model, given the calibration set: two runs with the same identity
    build the same weights, so the second reuses the first's evaluation (sweep settings equal to the
    defaults, or scorers that remove the same layers)."""
    return json.dumps([sorted(removed_layers), repr(compensation)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy", choices=["toy", "smol-llava"], help="a model answering shapes")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="first N calibration samples (default: all 256; compare on smol-llava used 64)")
    parser.add_argument("--sweeps", default="all", choices=["all", "none"],
                        help="none: only the component grid at 10-40%% (the sweeps at 30%% are 21 more runs)")
    parser.add_argument("--limit", type=int, default=1200, help="shapes test questions (default 1200)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the .md and .png from the JSON in --out (an unfinished run's too); run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ablation_short_lvlm" + ("" if args.model == "toy" else f"_{args.model}")
    path = out / f"{stem}.json"
    if args.report_only:
        if not path.exists():
            raise SystemExit(f"{path} does not exist: nothing to report")
        report_only(path)
        return
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in ("limit", "num_samples"):
        if name in results and results[name] != getattr(args, name):
            raise SystemExit(f"{path} was measured with --{name.replace('_', '-')} {results[name]}; "
                             "delete it or use that value")
    results.update(model=args.model, limit=args.limit, num_samples=args.num_samples, torch=torch.__version__)
    runs = results.setdefault("runs", {})

    samples = load_benchmark("shapes", limit=args.limit)
    calib = read_calibration(Calibration(num_samples=args.num_samples), args.model)
    base, processor = load(args.model)
    calib = calib.with_batches(encode_calibration(list(calib.samples), processor, get_adapter(base)))

    def save() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(path)

    planned = planned_runs(args.sweeps == "all")
    identities = {key: model_identity(entry["removed_layers"],
                                      method_options(planned[key][0])[1] if key in planned else None)
                  for key, entry in runs.items() if key == "unpruned" or key in planned}

    def run(key: str, kwargs: dict, ratio: float | None) -> None:
        if key in runs:
            return
        model, _ = load(args.model)
        started = time.perf_counter()
        plan = None
        if ratio is not None:
            scorer, compensation = method_options(kwargs)
            model, plan = prune(model, processor, ratio, scorer=scorer, compensation=compensation, calibration=calib,
                                provenance=Provenance(source=args.model))
            kwargs = {k: v for k, v in kwargs.items() if k != "compensation"}
        seconds = time.perf_counter() - started
        removed = plan.removed_layers if plan else []
        identity = model_identity(removed, compensation if ratio is not None else None)
        same = next((other for other, entry in runs.items() if identities.get(other) == identity), None)
        if same is None:
            metrics, _ = evaluate(model, processor, "shapes", samples, batch_size=50)
        else:  # the same weights were evaluated already: the same answers, not worth 3 minutes again
            metrics = {name: runs[same][name] for name in ("accuracy", "per_family")}
        runs[key] = {"ratio": ratio, "kwargs": {k: v for k, v in kwargs.items()}, "accuracy": metrics["accuracy"],
                     "per_family": metrics["per_family"], "prune_seconds": round(seconds, 2),
                     "removed_layers": removed,
                     "compensation_report": plan.params.get("compensation_report") if plan else None,
                     "same_model_as": same}
        identities[key] = identity
        print(f"{key}: {metrics['accuracy']:.2f}  removed {removed}" + (f" (same model as {same})" if same else ""),
              flush=True)
        save()

    run("unpruned", {}, None)
    for key, (kwargs, ratio) in planned.items():
        run(key, kwargs, ratio)
    write_report(results, out, stem)


def report_only(path: Path) -> None:
    """Rewrite the tables and plot of a (possibly unfinished) results JSON without running anything."""
    results = json.loads(path.read_text())
    write_report(results, path.parent, path.stem)


def write_report(results: dict, out: Path, stem: str = "ablation_short_lvlm") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    base = runs["unpruned"]["accuracy"]
    model = results.get("model", "toy")
    samples = results.get("num_samples") or 256
    options = "" if model == "toy" else f" --model {model} --num-samples {samples}"
    options += "" if any(key.endswith("@ 0.3") and ":" in key for key in runs) else " --sweeps none"
    lines = [f"# Short-LVLM ablation on {'the toy LVLM' if model == 'toy' else model}", "",
             f"Command: `.venv/bin/python benchmarks/ablation_short_lvlm.py{options} --limit {results['limit']}`  ",
             f"Shapes test questions: {results['limit']}; calibration: bundled shapes set ({samples} samples); "
             f"unpruned accuracy {base:.2f}%. Defaults: tis_top_p={TIS().top_p}, k={SCP().rank}, "
             "alpha=1, writers=mlp, chat template skipped. Retention = pruned / unpruned accuracy.", "",
             "## Components (accuracy %, retention %)", "",
             "| method | " + " | ".join(f"{int(r * 100)}%" for r in RATIOS) + " |",
             "|---|" + "---|" * len(RATIOS)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in ARMS:
        accs = [runs[f"{arm} @ {r}"]["accuracy"] if f"{arm} @ {r}" in runs else None for r in RATIOS]
        lines.append(f"| {arm} | " + " | ".join("not run" if a is None else f"{a:.2f} ({100 * a / base:.1f})"
                                               for a in accs) + " |")
        done = [(100 * r, a) for r, a in zip(RATIOS, accs, strict=True) if a is not None]
        ax.plot([x for x, _ in done], [a for _, a in done], marker="o", label=arm)
    ax.axhline(base, color="gray", linestyle="--", label="unpruned")
    ax.set_xlabel("layers removed (%)")
    ax.set_ylabel("shapes accuracy (%)")
    ax.set_title(f"Short-LVLM components on {model}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=120)
    plt.close(fig)
    lines += ["", "Removed layers at 30%: " + "; ".join(
        f"{arm}: {runs[f'{arm} @ 0.3']['removed_layers']}" for arm in ARMS if f"{arm} @ 0.3" in runs), ""]
    missing = [key for key in planned_runs(with_sweeps=True) if key not in runs]
    if missing:  # a run stopped early (the script resumes): say what the tables lack
        lines += [f"Not run yet ({len(missing)}): " + "; ".join(missing), ""]
    swept = [(group, label) for group, label, _ in sweeps() if f"{group}: {label} @ 0.3" in runs]
    lines += ["## Parameter sweeps at 30%", "", "| parameter | setting | accuracy | retention | removed |",
              "|---|---|---|---|---|"] if swept else []
    for group, label in swept:
        entry = runs[f"{group}: {label} @ 0.3"]
        same = f" (the model of {entry['same_model_as']})" if entry.get("same_model_as") else ""
        lines.append(f"| {group} | {label} | {entry['accuracy']:.2f} | {100 * entry['accuracy'] / base:.1f} | "
                     f"{entry['removed_layers']}{same} |")
    lines += ["", "Per-family accuracy at 30%:", "", "| run | " + " | ".join(runs["unpruned"]["per_family"]) + " |",
              "|---|" + "---|" * len(runs["unpruned"]["per_family"])]
    for key in ["unpruned", *(f"{arm} @ 0.3" for arm in ARMS if f"{arm} @ 0.3" in runs)]:
        lines.append(f"| {key} | " + " | ".join(f"{v:.1f}" for v in runs[key]["per_family"].values()) + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
