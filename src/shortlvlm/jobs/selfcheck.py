"""Self-check: prune and verify a tiny model of every supported architecture.

Exercises the exact path a user's checkpoint takes (load from a directory, find the layers,
remove them, save atomically, reload with AutoModelForImageTextToText, compare logits on a
multimodal batch, compare cached with uncached greedy generation) on random-weight models.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from shortlvlm.io.load import load
from shortlvlm.jobs.checkpoint import Verification, prune_layers_to_checkpoint
from shortlvlm.models import get_adapter
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model

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
        adapter=adapter, verification=Verification(inputs=inputs), source=str(source),
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
