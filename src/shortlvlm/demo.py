"""`shortlvlm demo`: prune and verify a tiny model of every supported architecture.

Until the trained toy LVLM ships, this is the main job on the bundled default: it exercises the
exact path a user's checkpoint takes (load from a directory, find the layers, remove them, save
atomically, reload with AutoModelForImageTextToText, compare logits on a multimodal batch, and
compare cached with uncached greedy generation).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from shortlvlm.checkpoint import check_output_dir, load
from shortlvlm.models import get_adapter
from shortlvlm.models.tiny import TINY_MODEL_TYPES, tiny_inputs, tiny_model
from shortlvlm.pipeline import prune_layers_to_checkpoint

NUM_LAYERS = 6
REMOVED = [2, 4]  # outside Qwen3-VL's deepstack layers; one full and one sliding layer in Gemma 3


def prune_one(model_type: str, work: Path) -> dict:
    """Build, save, reload, prune and verify one tiny architecture; return its report row."""
    start = time.perf_counter()
    source = work / "sources" / model_type
    tiny_model(model_type, NUM_LAYERS).save_pretrained(source)
    model, processor = load(source, dtype=torch.float32)
    inputs = tiny_inputs(model.config)
    adapter = get_adapter(model)
    result = prune_layers_to_checkpoint(
        model, processor, REMOVED, work / "checkpoints" / model_type,
        adapter=adapter, verify_inputs=inputs, source=str(source),
    )
    return {
        "model_type": model_type,
        "class": type(model).__name__,
        "adapter": adapter.spec.name,
        "layers_before": result.plan.num_layers_before,
        "layers_after": adapter.num_layers,
        "removed_layers": result.plan.removed_layers,
        "params_before": result.params_before,
        "params_after": result.params_after,
        "reload_max_abs_logit_diff": result.report.max_abs_logit_diff,
        "cached_generation_agrees": result.report.generation_agrees,
        "seconds": round(time.perf_counter() - start, 2),
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| architecture | class | layers | parameters | reload max abs logit diff | cached = uncached | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['adapter']} | {r['class']} | {r['layers_before']} -> {r['layers_after']} | "
            f"{r['params_before']:,} -> {r['params_after']:,} | {r['reload_max_abs_logit_diff']:.1e} | "
            f"{'yes' if r['cached_generation_agrees'] else 'NO'} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def run_demo(out: Path, overwrite: bool = False) -> int:
    """Run the demo into `out` (written to a temporary directory, moved into place at the end)."""
    from transformers.utils import logging as hf_logging

    check_output_dir(out, overwrite)
    hf_logging.disable_progress_bar()  # one bar over architectures instead of two per checkpoint
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        rows = [prune_one(t, work) for t in tqdm(TINY_MODEL_TYPES, desc="prune + verify", unit="arch")]
        shutil.rmtree(work / "sources")
        report = {
            "what": "tiny random-weight models of every supported architecture: layers "
            f"{REMOVED} of {NUM_LAYERS} removed, saved, reloaded with AutoModelForImageTextToText "
            "and verified on a multimodal batch",
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "results": rows,
        }
        (work / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n")
        table = markdown_table(rows)
        (work / "demo_report.md").write_text(f"# shortlvlm demo\n\n{report['what']}.\n\n{table}")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(table)
    print(f"all {len(rows)} architectures pruned and verified; report and checkpoints in {out}")
    return 0
