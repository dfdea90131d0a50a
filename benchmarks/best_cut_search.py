"""How much can a 30% layer removal keep on a model too deep for exhaustive search, and what does SCP do to it?

    .venv/bin/python benchmarks/best_cut_search.py [--model smol-llava] [--select 300] [--pool 15] [--beam 1]
        [--limit 1200] [--ratio 0.3] [--extra-set 2,4,5] [--out benchmarks/results]
    .venv/bin/python benchmarks/best_cut_search.py --model smol-llava --gaps-only --extra-set 3,4,5 [--extra-set ...]

An estimate of the best cut, for judging the scorers on smol-llava (30 layers: 14 million 9-layer
sets, so toy_removal_ceiling.py's exhaustive search is out of reach):
1. each layer removed alone, accuracy on the selection split (shapes questions from the calibration
   split, index 100000+: disjoint from the calibration samples and from the test split; the same
   split as toy_removal_ceiling.py and tis_loss_selection.py);
2. a beam search (width `--beam`; 1 = greedy) over the `--pool` layers whose single removal costs
   least: each step adds the layer whose removal, together with those already chosen, keeps the
   most selection accuracy. The test split is never used to choose;
3. the chosen set, and every `--extra-set` (e.g. a scorer's choice, for comparison), measured on the
   test split without and with SCP (alpha 1, the paper's form, and alpha fitted), plus SCP's gap
   statistics per removed run (calibration set, important tokens): the share of the gap's energy
   in its top-k subspace, the fitted alpha, and how much of the gap the edit closes on the
   unpruned model's own streams: residual = |H - a P u|^2 / |H|^2 (u: the edited writer's output,
   P = V_k V_k^T; 1 - (2a tr(V'CV) - a^2 tr(V'GV)) / tr(H'H) from the streamed statistics).
   A residual above 1 means the edit moves the stream further from the unpruned one than no edit.
Writes best_cut_search_<model>.{json,md}; resumable (every measured set is kept).
`--gaps-only` skips the search and the test split: only the gap statistics of each `--extra-set`
(one calibration pass per set), written to best_cut_gaps_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from toy_removal_ceiling import SELECT_START, accuracy, selection_split  # the same selection split
from tqdm import tqdm

from shortlvlm import drop_layers, get_adapter, load
from shortlvlm.compensation import SCP, compensate, measure_gaps, removed_runs, top_subspace
from shortlvlm.data.benchmarks.shapes import load_shapes
from shortlvlm.data.calibration import load_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.importance import TIS


def gap_diagnostics(model, batches, removed: list[int], rank: int = 8, tis: TIS | None = None) -> list[dict]:
    """Per compensated run: SCP's gap statistics on the unpruned model (see the module docstring)."""
    adapter = get_adapter(model)
    stats = measure_gaps(model, adapter, batches, removed, SCP(alpha="fit", writers="mlp", tis=tis or TIS()))
    rows = []
    for run in removed_runs(removed):
        if run.below is None:
            rows.append({"removed": run.layers, "edited_layer": None})
            continue
        hth, cross, gram = (stats[f"{k}.{run.below}"] for k in ("hth", "cross", "gram"))
        basis, values = top_subspace(hth, rank)
        energy = torch.trace(hth).item()
        projected_cross = torch.trace(basis.T @ cross @ basis).item()
        projected_gram = torch.trace(basis.T @ gram @ basis).item()
        fitted = projected_cross / projected_gram if projected_gram > 0 else 0.0

        def residual(alpha: float, energy=energy, c=projected_cross, g=projected_gram) -> float:
            return 1 - (2 * alpha * c - alpha ** 2 * g) / energy

        top = basis[:, 0].abs()
        rows.append({
            "removed": run.layers, "edited_layer": run.below, "tokens": int(stats[f"tokens.{run.below}"].item()),
            "gap_energy_per_token": energy / max(1, int(stats[f"tokens.{run.below}"].item())),
            "top_k_energy_share": values.sum().item() / energy,
            "writer_energy_in_subspace_vs_gap": projected_gram / energy,
            "fitted_alpha": fitted, "residual_alpha_1": residual(1.0), "residual_fitted": residual(fitted),
            "top_direction_mass_on_3_largest_coordinates": (top.pow(2).topk(3).values.sum() / top.pow(2).sum()).item(),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smol-llava")
    parser.add_argument("--select", type=int, default=300, help="selection-split questions (default 300)")
    parser.add_argument("--pool", type=int, default=15, help="layers searched: the N cheapest single removals")
    parser.add_argument("--beam", type=int, default=1, help="beam width (1: greedy)")
    parser.add_argument("--limit", type=int, default=1200, help="test questions for the chosen sets")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--num-samples", type=int, default=64, help="calibration samples for SCP (compare's default)")
    parser.add_argument("--extra-set", action="append", default=[],
                        help="comma-separated layers to measure beside the search's choice (repeatable)")
    parser.add_argument("--gaps-only", action="store_true",
                        help="only SCP's gap statistics of each --extra-set (no search, no test split)")
    parser.add_argument("--gap-tokens", choices=["important", "all"], default="important",
                        help="tokens the gap statistics are measured on: TIS's important tokens (what Short-LVLM's "
                             "SCP uses) or every real token (what `compare`'s +scp uses for non-TIS scorers); "
                             "`all` writes best_cut_gaps_<model>_all")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.gaps_only:
        gaps_only(args, out)
        return
    path = out / f"best_cut_search_{args.model}.json"
    config = {"model": args.model, "select": args.select, "limit": args.limit, "ratio": args.ratio,
              "num_samples": args.num_samples}
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.get("config", config) != config:
        raise SystemExit(f"{path} was measured with {results['config']}; delete it or use those options")
    results["config"] = config

    def save() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(path)

    base, processor = load(args.model)
    num_layers = get_adapter(base).num_layers
    count = round(args.ratio * num_layers)
    select = selection_split(args.select)
    started = time.perf_counter()

    def measure(layers: list[int], samples) -> tuple[float, dict]:
        model = copy.deepcopy(base)
        if layers:
            drop_layers(model, layers)
        return accuracy(model, processor, samples)

    measured = results.setdefault("selection", {})  # JSON key of a sorted set -> selection accuracy

    def selection(layers: list[int]) -> float:
        key = json.dumps(sorted(layers))
        if key not in measured:
            measured[key] = measure(sorted(layers), select)[0]
            save()
        return measured[key]

    single = {layer: selection([layer]) for layer in tqdm(range(num_layers), desc="single removals", unit="layer")}
    results["unpruned_selection"] = selection([])
    pool = sorted(sorted(range(num_layers), key=lambda i: (-single[i], i))[:args.pool])
    results["pool"] = pool
    beam: list[list[int]] = [[]]
    steps = []
    for step in range(count):
        candidates = {tuple(sorted([*chosen, layer])) for chosen in beam for layer in pool if layer not in chosen}
        scored = {c: selection(list(c)) for c in tqdm(sorted(candidates), desc=f"step {step + 1}/{count}", unit="set")}
        beam = [list(c) for c in sorted(scored, key=lambda c: (-scored[c], c))[:args.beam]]
        steps.append({"best": beam[0], "selection": scored[tuple(beam[0])], "tried": len(scored)})
    results["search"] = {"beam": args.beam, "steps": steps, "minutes": round((time.perf_counter() - started) / 60, 1)}
    save()

    test = load_shapes(args.limit)
    calib = load_calibration(None, model_name=args.model, limit=args.num_samples)
    batches = encode_calibration(calib, processor, get_adapter(base))
    tested = results.setdefault("test", {})
    if "none" not in tested:
        tested["none"] = {"accuracy": measure([], test)[0]}
    sets = {"search": beam[0]} | {f"extra {s}": sorted(int(x) for x in s.split(",")) for s in args.extra_set}
    for label, layers in sets.items():
        key = json.dumps(layers)
        entry = tested.setdefault(key, {"label": label})
        entry["label"] = label
        if "none" not in entry:
            entry["none"] = measure(layers, test)[0]
        if "gaps" not in entry:
            entry["gaps"] = gap_diagnostics(base, batches, layers)
        for alpha in (1.0, "fit"):
            name = f"scp alpha={alpha}"
            if name not in entry:
                model = copy.deepcopy(base)
                compensate(model, get_adapter(model), batches, layers, SCP(alpha=alpha, tis=TIS()))
                drop_layers(model, layers)
                entry[name] = accuracy(model, processor, test)[0]
        save()
    write_report(results, out, count, args)


GAP_HEADER = ["| set | run | edited layer | top-k energy share | fitted alpha | residual a=1 | residual fitted | "
              "top direction on 3 coords |", "|---|---|---|---|---|---|---|---|"]


def gap_lines(label: str, gaps: list[dict]) -> list[str]:
    lines = []
    for gap in gaps:
        if gap["edited_layer"] is None:
            lines.append(f"| {label} | {gap['removed']} | none (starts at layer 0) | | | | | |")
            continue
        lines.append(f"| {label} | {gap['removed']} | {gap['edited_layer']} | "
                     f"{gap['top_k_energy_share']:.3f} | {gap['fitted_alpha']:.3f} | {gap['residual_alpha_1']:.3f} | "
                     f"{gap['residual_fitted']:.3f} | {gap['top_direction_mass_on_3_largest_coordinates']:.3f} |")
    return lines


def set_residual(gaps: list[dict]) -> tuple[float, float]:
    """(gap-energy-weighted residual at alpha 1, largest residual) over a set's compensated runs (nan if none)."""
    edited = [g for g in gaps if g.get("edited_layer") is not None]
    if not edited:
        return float("nan"), float("nan")
    energy = sum(g["gap_energy_per_token"] for g in edited)
    weighted = sum(g["gap_energy_per_token"] * g["residual_alpha_1"] for g in edited) / energy
    return weighted, max(g["residual_alpha_1"] for g in edited)


def gaps_name(args) -> str:
    return f"best_cut_gaps_{args.model}" + ("_all" if getattr(args, "gap_tokens", "important") == "all" else "")


def gaps_only(args, out: Path) -> None:
    """SCP's gap statistics of the given sets on the unpruned model, nothing else."""
    if not args.extra_set:
        raise SystemExit("--gaps-only needs at least one --extra-set (the removed layers to measure)")
    base, processor = load(args.model)
    calib = load_calibration(None, model_name=args.model, limit=args.num_samples)
    batches = encode_calibration(calib, processor, get_adapter(base))
    sets = {s: sorted(int(x) for x in s.split(",")) for s in args.extra_set}
    tis = TIS(tokens=args.gap_tokens)
    results = {"config": {"model": args.model, "num_samples": args.num_samples, "rank": 8, "tokens": args.gap_tokens},
               "sets": {s: gap_diagnostics(base, batches, layers, tis=tis) for s, layers in tqdm(sets.items(),
                                                                                                desc="sets")}}
    (out / f"{gaps_name(args)}.json").write_text(json.dumps(results, indent=1) + "\n")
    write_gaps_report(results, args, out)


def write_gaps_report(results: dict, args, out: Path) -> None:
    """best_cut_gaps_<model>.md from the measured statistics."""
    extra = "".join(f" --extra-set {s}" for s in args.extra_set)
    tokens = getattr(args, "gap_tokens", "important")
    lines = [f"# SCP's gap statistics on {args.model}", "",
             f"Command: `.venv/bin/python benchmarks/best_cut_search.py --model {args.model} --gaps-only "
             f"--num-samples {args.num_samples}{extra}" + (" --gap-tokens all" if tokens == "all" else "") + "`", "",
             "residual = |H - a P u|^2 / |H|^2 on the unpruned model's streams, H the gap a removed run leaves on the "
             f"calibration set's {'real' if tokens == 'all' else 'important'} tokens, "
             "u the output of the kept layer below that SCP edits, P the top-8 "
             "gap subspace (1 = the edit closes nothing; above 1 = it widens the gap).", "", *GAP_HEADER]
    for label, gaps in results["sets"].items():
        lines += gap_lines(label, gaps)
    lines += ["", "Per set, over its compensated runs: the residual at a=1 weighted by each run's gap energy per token "
              "(the share of the whole set's gap left after SCP's edit) and the largest run's residual:", "",
              "| set | weighted residual a=1 | largest residual a=1 |", "|---|---|---|"]
    for label, gaps in results["sets"].items():
        weighted, largest = set_residual(gaps)
        lines.append(f"| {label} | {weighted:.3f} | {largest:.3f} |")
    text = "\n".join(lines) + "\n"
    (out / f"{gaps_name(args)}.md").write_text(text)
    print(text)


def write_report(results: dict, out: Path, count: int, args) -> None:
    cfg = results["config"]
    base = results["test"]["none"]["accuracy"]
    single = {int(json.loads(k)[0]): v for k, v in results["selection"].items() if len(json.loads(k)) == 1}
    extra = "".join(f" --extra-set {s}" for s in args.extra_set)
    lines = [f"# The best {round(100 * cfg['ratio'])}% cut of {cfg['model']}: a beam search, and SCP on it", "",
             f"Command: `.venv/bin/python benchmarks/best_cut_search.py --model {cfg['model']} "
             f"--select {cfg['select']} "
             f"--pool {args.pool} --beam {args.beam} --limit {cfg['limit']} --ratio {cfg['ratio']}{extra}`", "",
             f"Selection split: {cfg['select']} shapes questions from the calibration split (index {SELECT_START}+; "
             f"disjoint from the calibration set and the test split). Unpruned: {results['unpruned_selection']:.2f}% "
             f"there, {base:.2f}% on {cfg['limit']} test questions. Search: {results['search']['minutes']} min.", "",
             "## Each layer removed alone (selection split, accuracy %)", "",
             "| layer | " + " | ".join(str(i) for i in sorted(single)) + " |",
             "|---|" + "---|" * len(single),
             "| accuracy | " + " | ".join(f"{single[i]:.0f}" for i in sorted(single)) + " |", "",
             f"Pool: {results['pool']}.", "",
             f"## Search (beam {results['search']['beam']}), selection accuracy after each step", "",
             "| step | set | selection | sets tried |", "|---|---|---|---|"]
    for i, step in enumerate(results["search"]["steps"], 1):
        lines.append(f"| {i} | {step['best']} | {step['selection']:.2f} | {step['tried']} |")
    lines += ["", f"## Test split ({cfg['limit']} questions): the chosen sets, without and with SCP", "",
              "| set | removed | none | SCP alpha=1 | SCP alpha=fit |", "|---|---|---|---|---|"]
    for key, entry in results["test"].items():
        if key == "none":
            continue
        cells = [f"{entry[k]:.2f} ({100 * entry[k] / base:.1f}%)" for k in ("none", "scp alpha=1.0", "scp alpha=fit")]
        lines.append(f"| {entry['label']} | {key} | " + " | ".join(cells) + " |")
    lines += ["", "## SCP's gap statistics per removed run (calibration set, important tokens, k = 8)", "",
              "residual = |H - a P u|^2 / |H|^2 on the unpruned model's streams (1 = the edit closes nothing; "
              "above 1 = it widens the gap).", "",
              *GAP_HEADER]
    for key, entry in results["test"].items():
        if key != "none":
            lines += gap_lines(entry["label"], entry.get("gaps", []))
    text = "\n".join(lines) + "\n"
    (out / f"best_cut_search_{cfg['model']}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
