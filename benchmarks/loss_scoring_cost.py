"""Scoring cost of the loss-based scorers, side by side in one process: seconds and decoder layers run.

    .venv/bin/python benchmarks/loss_scoring_cost.py [--model toy] [--ratio 0.4] [--num-samples N]
        [--methods tis-loss,tis-loss-recompute,sleb,ppl] [--repeats 1] [--out benchmarks/results]

Each method ranks MODEL's layers on the same encoded calibration set (the model's bundled shapes
samples; `--num-samples` takes the first N) for the count `compare` scores at `--ratio`.
`tis-loss-recompute` is `tis-loss --loss-recompute`: every loss pass from the input, no stored
streams, the image encoder run in every pass; `sleb-encoder-every-pass` is SLEB without reusing the
image encoder's output (design §2.4). Each method starts with no kept encoder output. Before the
methods, one unpruned loss pass is timed by part (decoder layers, image encoder, LM head, the rest):
what a pass costs besides its decoder layers. Besides wall time (noisy on a shared machine; the
ratio of two methods measured in the same run is what to read), every decoder layer's
computations are counted with a hook on its first
submodule, which fires only when the layer is really computed (bypassed layers are not), so
`layers run` is the compute each scorer spends in decoder layers, independent of the machine.
The orders are printed so that `tis-loss` and `tis-loss-recompute` can be seen to agree. Writes
loss_scoring_cost_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from shortlvlm import get_adapter, load
from shortlvlm.data.calibration_set import Calibration, read_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.jobs.compare_results import write_json
from shortlvlm.scoring import SLEB, Perplexity, ScoringContext, TISLoss
from shortlvlm.scoring.loss import answer_loss

SCORERS = {"tis-loss": lambda: TISLoss(), "tis-loss-recompute": lambda: TISLoss(recompute=True),
           "sleb": lambda: SLEB(), "ppl": lambda: Perplexity(), "sleb-encoder-every-pass": lambda: SLEB()}
ENCODER_EVERY_PASS = {"sleb-encoder-every-pass"}  # the image encoder run in every pass (no reuse, design §2.4)
ENCODER_PARTS = ("vision_tower", "visual", "vision_model", "multi_modal_projector", "connector")


def pass_anatomy(model, adapter, batches, repeats: int = 3) -> dict:
    """Where one unpruned answer-loss pass over the calibration batches spends its time (median of
    `repeats`, the image encoder run): the decoder layers, the image encoder (vision module and
    projector), the LM head, and the rest (embeddings, masks, rotary tables, the loss, Python)."""
    parts = {"decoder layers": list(adapter.layers),
             "image encoder": [getattr(model.model, n) for n in ENCODER_PARTS if hasattr(model.model, n)],
             "lm head": [model.lm_head] if hasattr(model, "lm_head") else []}
    spent = dict.fromkeys(parts, 0.0)
    started: dict[int, float] = {}
    handles = []
    for name, modules in parts.items():
        for module in modules:
            handles.append(module.register_forward_pre_hook(
                lambda m, a: started.__setitem__(id(m), time.perf_counter())))
            handles.append(module.register_forward_hook(
                lambda m, a, o, name=name: spent.__setitem__(name, spent[name] + time.perf_counter() - started[id(m)])))
    context = ScoringContext(model, adapter, batches, reuse_encoder=False)
    rows = []
    try:
        for _ in range(repeats):
            spent.update(dict.fromkeys(parts, 0.0))
            begun = time.perf_counter()
            answer_loss(context)
            total = time.perf_counter() - begun
            rows.append({**spent, "rest": total - sum(spent.values()), "total": total})
    finally:
        for handle in handles:
            handle.remove()
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    per_layer = median["decoder layers"] / adapter.num_layers
    return {"seconds": {k: round(v, 6) for k, v in median.items()},
            "in_decoder_layers": {k: round(v / per_layer, 2) for k, v in median.items()}}


def count_layer_runs(adapter) -> tuple[list[int], list]:
    """Per-layer counters of real computations (a hook on each layer's first submodule)."""
    counts = [0] * adapter.num_layers
    handles = []
    for index, layer in enumerate(adapter.layers):
        first = next(module for module in layer.children() if any(True for _ in module.parameters()))

        def hook(module, args, index=index):
            counts[index] += 1
        handles.append(first.register_forward_pre_hook(hook))
    return counts, handles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--num-samples", type=int, default=None, help="first N calibration samples (default: all)")
    parser.add_argument("--methods", default="tis-loss,tis-loss-recompute,sleb,ppl")
    parser.add_argument("--repeats", type=int, default=1, help="time each method this many times (median)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in SCORERS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {sorted(SCORERS)}")

    model, processor = load(args.model)
    adapter = get_adapter(model)
    calib = read_calibration(Calibration(num_samples=args.num_samples), args.model)
    batches = encode_calibration(list(calib.samples), processor, adapter, batch_size=calib.options.batch_size)
    num_remove = round(args.ratio * adapter.num_layers)  # compare's count at its largest ratio
    results = {"model": args.model, "num_layers": adapter.num_layers, "num_remove": num_remove,
               "num_samples": len(calib.samples), "batches": len(batches), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "methods": {}}
    times = {method: [] for method in methods}
    results["pass_anatomy"] = pass_anatomy(model, adapter, batches)
    print(f"one unpruned pass: {results['pass_anatomy']}", flush=True)
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every method
        for method in methods:
            counts, handles = count_layer_runs(adapter)
            # each method keeps its own image-encoder outputs, so each pays its first pass in full
            context = ScoringContext(model, adapter, batches,
                                     reuse_encoder=method not in ENCODER_EVERY_PASS)
            started = time.perf_counter()
            ranking = SCORERS[method]().rank(context, num_remove)
            times[method].append(time.perf_counter() - started)
            for handle in handles:
                handle.remove()
            results["methods"][method] = {
                "seconds": round(statistics.median(times[method]), 2),
                "all_seconds": [round(t, 2) for t in times[method]],
                "decoder_layers_run": sum(counts) / len(batches), "order": ranking.order[:num_remove],
                "loss_passes": ranking.details.get("loss_passes"), "pool": ranking.details.get("pool")}
            print(f"{method}: {times[method][-1]:.1f} s, {sum(counts) / len(batches):.0f} decoder layers run, "
                  f"order {ranking.order[:num_remove]}", flush=True)
    write_report(results, Path(args.out), args)


def write_report(results: dict, out: Path, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"loss_scoring_cost_{results['model']}"
    write_json(out / f"{stem}.json", results)
    methods = results["methods"]
    reference = methods.get("sleb")
    command = (f".venv/bin/python benchmarks/loss_scoring_cost.py --model {results['model']} --ratio {args.ratio}"
               + (f" --num-samples {args.num_samples}" if args.num_samples else "")
               + f" --methods {args.methods} --repeats {args.repeats}")
    lines = [f"# Loss-based scoring cost on {results['model']}", "", f"Command: `{command}`  ",
             f"{results['num_layers']} layers, {results['num_remove']} removed, {results['num_samples']} calibration "
             f"samples in {results['batches']} batches, {results['threads']} torch threads, one process.", "",
             "| method | seconds | decoder layers run | loss passes | vs SLEB (time) | vs SLEB (layers) | order |",
             "|---|---|---|---|---|---|---|"]
    for method, entry in methods.items():
        share = ((f"{100 * entry['seconds'] / reference['seconds']:.0f}% | "
                  f"{100 * entry['decoder_layers_run'] / reference['decoder_layers_run']:.0f}%")
                 if reference else "- | -")
        lines.append(f"| {method} | {entry['seconds']:.1f} | {entry['decoder_layers_run']:.0f} | "
                     f"{entry['loss_passes'] if entry['loss_passes'] is not None else '-'} | {share} | "
                     f"{entry['order']} |")
    anatomy = results.get("pass_anatomy")
    if anatomy:
        lines += ["", "One unpruned loss pass over the calibration set, image encoder run (median of 3): seconds, and "
                  "the same in decoder layers (a part's time over one decoder layer's average):", "",
                  "| part | seconds | decoder layers |", "|---|---|---|"]
        lines += [f"| {part} | {seconds:.3f} | {anatomy['in_decoder_layers'][part]:.2f} |"
                  for part, seconds in anatomy["seconds"].items()]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
