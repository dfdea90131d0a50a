"""`shortlvlm demo`: the main job on the bundled default, with a report.

1. Self-check: a tiny model of every supported architecture is pruned, saved and verified.
2. The toy LVLM is evaluated on the shapes benchmark, then 30% of its decoder layers are removed
   by each available rule (naive `last`/`random`, Short-LVLM with and without SCP, calibrated on
   the bundled toy calibration set), each result saved as a verified checkpoint and evaluated again.
The report (markdown, JSON and a plot) and the pruned toy checkpoints land in --out atomically.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from shortlvlm.checkpoint import check_output_dir, load
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.eval.generate import answer_samples
from shortlvlm.models import get_adapter
from shortlvlm.models.tiny import TINY_MODEL_TYPES
from shortlvlm.pipeline import prune_layers_to_checkpoint, write_checkpoint
from shortlvlm.pruning import prune
from shortlvlm.report import accuracy_plot, accuracy_table
from shortlvlm.selfcheck import markdown_table, prune_one
from shortlvlm.toy.bench import load_shapes, score_shapes

RATIO = 0.3
NAIVE_RULES = {
    "last": lambda n_layers, n_cut: list(range(n_layers - n_cut, n_layers)),
    "random": lambda n_layers, n_cut: sorted(random.Random(0).sample(range(n_layers), n_cut)),
}


def toy_rows(work: Path, limit: int) -> dict[str, dict]:
    """Accuracy of the toy LVLM unpruned and after each naive 30% cut."""
    samples = load_shapes(limit)
    model, processor = load("toy", dtype=torch.float32)
    num_layers = get_adapter(model).num_layers
    rows = {"unpruned": score_shapes(samples, answer_samples(model, processor, samples, batch_size=50))}
    n_cut = round(RATIO * num_layers)
    for rule, choose in NAIVE_RULES.items():
        model, processor = load("toy", dtype=torch.float32)
        removed = choose(num_layers, n_cut)
        start = time.perf_counter()
        prune_layers_to_checkpoint(model, processor, removed, work / "toy" / f"{rule}-{int(RATIO * 100)}",
                                   source="toy")
        row = score_shapes(samples, answer_samples(model, processor, samples, batch_size=50))
        rows[f"{rule} {n_cut}/{num_layers}"] = {**row, "removed_layers": removed,
                                                "seconds": round(time.perf_counter() - start, 1)}
    calib = toy_calibration()
    for label, compensation in (("short-lvlm", "scp"), ("tis-cosine", "none")):
        model, processor = load("toy", dtype=torch.float32)
        start = time.perf_counter()
        model, plan = prune(model, processor, calib, RATIO, "short-lvlm", compensation, source="toy", progress=False)
        write_checkpoint(model, processor, plan, work / "toy" / f"{label}-{int(RATIO * 100)}")
        row = score_shapes(samples, answer_samples(model, processor, samples, batch_size=50))
        rows[f"{label} {n_cut}/{num_layers}"] = {**row, "removed_layers": plan.removed_layers,
                                                 "seconds": round(time.perf_counter() - start, 1)}
    return rows


def run_demo(out: Path, overwrite: bool = False, limit: int = 600) -> int:
    """Run the demo into `out` (written to a temporary directory, moved into place at the end)."""
    from transformers.utils import logging as hf_logging

    check_output_dir(out, overwrite)
    hf_logging.disable_progress_bar()  # our bars instead of two per checkpoint
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        archs = [prune_one(t, work) for t in tqdm(TINY_MODEL_TYPES, desc="self-check", unit="arch")]
        shutil.rmtree(work / "sources")
        toy = toy_rows(work, limit)
        report = {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                  "architectures": archs, "toy": toy}
        (work / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n")
        accuracy_plot(toy, work / "toy_accuracy.png", f"Toy LVLM on shapes ({limit} questions)")
        text = (f"# shortlvlm demo\n\n## Toy LVLM: accuracy after removing {int(RATIO * 100)}% of the layers\n\n"
                f"{accuracy_table(toy)}\n\n![accuracy](toy_accuracy.png)\n\n"
                "## Self-check: every supported architecture pruned, saved, reloaded and verified\n\n"
                f"{markdown_table(archs)}")
        (work / "demo_report.md").write_text(text)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(accuracy_table(toy))
    print(f"\nself-check: {len(archs)} architectures pruned and verified")
    print(f"report: {out / 'demo_report.md'} (plot: {out / 'toy_accuracy.png'})")
    return 0
