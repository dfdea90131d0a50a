"""Speed of the toy LVLM unpruned vs. 10/20/30% pruned (Short-LVLM's layers), measured side by side.

    .venv/bin/python benchmarks/toy_speed.py [--rounds 30] [--warmup 3] [--answer-tokens 16]

Runs `shortlvlm.speed.run_bench` (the code behind `shortlvlm bench`: models interleaved in one
process, medians after warm-up, batch 1) on the toy and three pruned copies, then explains the gap
between the measured prefill speedup and the ideal L/(L-n): it times where one prefill of the
unpruned toy spends its time (decoder layers, vision tower + projector, the rest) with hooks, and
gives the speedup Amdahl's law predicts when only the decoder share shrinks by n/L.
Writes benchmarks/results/toy_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from shortlvlm import drop_layers, get_adapter, load
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.pruning import Provenance, score
from shortlvlm.selection import layers_to_remove
from shortlvlm.speed import bench_inputs, markdown_table, run_bench, synthetic_image

RESULTS = Path(__file__).parent / "results"
RATIOS = (0.1, 0.2, 0.3)


def loader(removed: list[int]):
    def load_pruned():
        model, processor = load("toy", dtype=torch.float32)
        if removed:
            drop_layers(model, removed)
        return model, processor
    return load_pruned


class Stopwatch:
    """Wall time spent inside a set of modules during forward passes (forward pre/post hooks)."""

    def __init__(self, modules):
        self.total, self.handles, self.started = 0.0, [], {}
        for module in modules:
            self.handles.append(module.register_forward_pre_hook(self._start))
            self.handles.append(module.register_forward_hook(self._stop))

    def _start(self, module, args):
        self.started[id(module)] = time.perf_counter()

    def _stop(self, module, args, output):
        self.total += time.perf_counter() - self.started.pop(id(module))

    def remove(self):
        for handle in self.handles:
            handle.remove()


@torch.inference_mode()
def prefill_breakdown(rounds: int) -> dict:
    """Median share of one prefill spent in the decoder layers and in the vision tower + projector."""
    model, processor = load("toy", dtype=torch.float32)
    inputs = bench_inputs(model, processor, synthetic_image(), "Describe the image in detail.")
    adapter = get_adapter(model)
    vision = [model.model.vision_tower, model.model.multi_modal_projector]
    shares = {"decoder": [], "vision": [], "total_ms": []}
    for _ in range(rounds + 3):
        decoder_watch, vision_watch = Stopwatch(list(adapter.layers)), Stopwatch(vision)
        start = time.perf_counter()
        model(**inputs, use_cache=True)
        total = time.perf_counter() - start
        decoder_watch.remove()
        vision_watch.remove()
        shares["decoder"].append(decoder_watch.total / total)
        shares["vision"].append(vision_watch.total / total)
        shares["total_ms"].append(1000 * total)
    return {key: statistics.median(values[3:]) for key, values in shares.items()} | {
        "prompt_tokens": int(inputs["input_ids"].shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=16)
    args = parser.parse_args()

    model, processor = load("toy", dtype=torch.float32)
    adapter = get_adapter(model)
    plan = score(model, processor, calibration=toy_calibration(), adapter=adapter,
                 provenance=Provenance(source="toy"))
    order = plan.params["removal_order"]
    settings = [("toy (unpruned)", [])]
    for ratio in RATIOS:
        removed = sorted(order[:layers_to_remove(ratio, adapter)])
        settings.append((f"toy -{int(ratio * 100)}% ({len(removed)} layers)", removed))
    del model, processor

    rows = run_bench([(label, loader(removed)) for label, removed in settings], rounds=args.rounds,
                     warmup=args.warmup, answer_tokens=args.answer_tokens)
    breakdown = prefill_breakdown(args.rounds)
    num_layers = rows[0]["decoder_layers"]
    # Prefill time against layer count is a line: the slope is one layer's cost, the intercept the
    # fixed cost that pruning cannot touch. (The hook breakdown undercounts the decoder: the hooks'
    # own overhead and the per-layer dispatch around them land outside the timed layers.)
    layers = torch.tensor([float(r["decoder_layers"]) for r in rows], dtype=torch.float64)
    prefill = torch.tensor([r["prefill_ms"] for r in rows], dtype=torch.float64)
    design = torch.stack([layers, torch.ones_like(layers)], dim=1)
    per_layer_ms, fixed_ms = torch.linalg.lstsq(design, prefill[:, None]).solution.flatten().tolist()
    fit = {"per_layer_ms": per_layer_ms, "fixed_ms": fixed_ms,
           "decoder_share": per_layer_ms * num_layers / (per_layer_ms * num_layers + fixed_ms)}
    for row, (_, removed) in zip(rows, settings, strict=True):
        row["removed_layers"] = removed
        cut = len(removed) / num_layers
        row["amdahl_prefill_speedup"] = 1 / (1 - fit["decoder_share"] * cut)
        row["amdahl_hooks_prefill_speedup"] = 1 / (1 - breakdown["decoder"] * cut)
        row["prefill_speedup_vs_ideal"] = row["prefill_speedup"] / row["ideal_speedup"]

    command = (f".venv/bin/python benchmarks/toy_speed.py --rounds {args.rounds} --warmup {args.warmup} "
               f"--answer-tokens {args.answer_tokens}")
    result = {"command": command, "environment": {"torch": torch.__version__, "platform": platform.platform(),
                                                  "threads": torch.get_num_threads()},
              "prefill_fit": fit, "prefill_breakdown_hooks": breakdown, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "toy_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    amdahl = "\n".join(f"| {r['model']} | {r['ideal_speedup']:.3f} | {r['amdahl_prefill_speedup']:.3f} | "
                       f"{r['prefill_speedup']:.3f} | {100 * r['prefill_speedup_vs_ideal']:.1f}% |" for r in rows)
    text = (f"# Toy LVLM speed, unpruned vs. pruned (batch 1, CPU, {torch.get_num_threads()} threads)\n\n"
            f"`{command}`; medians of {args.rounds} interleaved rounds after {args.warmup} warm-up rounds, "
            f"{args.answer_tokens}-token answers, layers chosen by Short-LVLM on the bundled calibration set.\n\n"
            f"{markdown_table(rows)}\n\n"
            "## Where the time goes\n\n"
            f"A least-squares line through prefill time against decoder layers: {fit['per_layer_ms']:.3f} ms per "
            f"layer plus {fit['fixed_ms']:.2f} ms that pruning cannot remove, so the decoder layers are "
            f"{100 * fit['decoder_share']:.1f}% of the unpruned prefill. Hooks around the modules of one prefill "
            f"({breakdown['prompt_tokens']} prompt tokens, {breakdown['total_ms']:.2f} ms; the hooks' own overhead "
            "counts against the decoder) put the vision tower + projector at "
            f"{100 * breakdown['vision']:.1f}% and the decoder layers at {100 * breakdown['decoder']:.1f}%; the rest "
            "is the embedding, final norm, LM head, mask and position set-up and Python dispatch.\n"
            "Removing n of L layers shrinks only the decoder share, so the expected prefill speedup is "
            "1 / (1 - share x n/L) (Amdahl), not L/(L-n):\n\n"
            "| model | ideal L/(L-n) | Amdahl, fitted decoder share | measured prefill speedup | measured / ideal |\n"
            f"|---|---|---|---|---|\n{amdahl}\n")
    (RESULTS / "toy_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
