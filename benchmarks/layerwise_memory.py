"""Calibrating models larger than memory: peak memory and time of scoring in each execution mode.

    .venv/bin/python benchmarks/layerwise_memory.py [--models toy,large] [--large-dir DIR]
        [--samples 8] [--batch-size 4] [--out-dir benchmarks/results]

Each (model, mode) runs in a fresh subprocess that imports everything, builds the calibration
batches, then measures from before the model is loaded to the end of the job: peak resident
memory above that baseline (kernel VmHWM after a clear_refs reset, as in capture_memory.py), load
seconds and work seconds. Modes:
- whole: `load()` into memory, Short-LVLM's tis-cosine scoring (`capture`, streaming statistics);
- accelerate-offload: `load(device_map="auto", max_memory={"cpu": "2MiB"})`: accelerate keeps the
  language model on disk and loads each layer for every batch's forward pass; same scoring;
- layerwise: `load(layerwise=True)`: decoder layers stay in the checkpoint's safetensors and the
  capture pass reads each one once, running every batch through it (shortlvlm.capture.layerwise);
- naive: `load()` into memory, then per batch one forward with output_attentions and
  output_hidden_states, TIS and cosines computed from the returned maps (what a non-streaming
  implementation does; its last layer is compared on the post-norm state, the usual peer convention);
- whole-prune / layerwise-prune: the full job (score, SCP statistics and edit at 25%, drop layers,
  save, reload-verify) in memory vs layer by layer: the save of the layer-by-layer model gathers
  its offloaded weights one small shard at a time and the reload check keeps layers on disk.
Every mode's layer scores are compared with the `whole` mode's (max |difference|; the layer-by-layer
ones must be 0). Models: `toy` (the bundled toy LVLM, bundled calibration set) and `large`, a
LLaVA-1.5-shaped LlavaForConditionalGeneration built from config with random weights in bfloat16
(CLIP ViT-L/14-336 tower, 24-layer Llama 2048 wide: ~1.6 B parameters), saved once to --large-dir,
calibrated on synthetic batches (576 image + 64 text tokens per sample). Measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import LlavaConfig, LlavaForConditionalGeneration

sys.path.insert(0, str(Path(__file__).parent))
from capture_memory import PeakRSS

from shortlvlm import get_adapter
from shortlvlm.capture import batch_from_inputs
from shortlvlm.compensation import SCP, compensate
from shortlvlm.importance import TIS, important_token_mask, token_importance
from shortlvlm.io.load import load
from shortlvlm.plan import Plan
from shortlvlm.scoring import ScoringContext, get_scorer
from shortlvlm.surgery import drop_layers

MODES = ("whole", "accelerate-offload", "layerwise", "naive", "whole-prune", "layerwise-prune")
TOP_P = 0.5
PRUNE_RATIO = 0.25
SEED = 0
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2"}
LARGE_IMAGE_TOKEN = 32000


def large_config() -> LlavaConfig:
    """LLaVA-1.5 layout at 1.6 B parameters: CLIP ViT-L/14-336 + a 24-layer, 2048-wide Llama."""
    return LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=336, patch_size=14, hidden_size=1024,
                           intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, projection_dim=768),
        text_config=dict(model_type="llama", vocab_size=32064, hidden_size=2048, intermediate_size=5504,
                         num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                         max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_index=LARGE_IMAGE_TOKEN, image_seq_length=576, vision_feature_layer=-2,
        vision_feature_select_strategy="default", dtype="bfloat16",
    )


def build_large(directory: Path) -> None:
    """Random bf16 weights saved as a standard checkpoint (once; reused when it exists)."""
    if (directory / "config.json").is_file():
        return
    print(f"building the large random model in {directory} ...", file=sys.stderr)
    torch.manual_seed(SEED)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = LlavaForConditionalGeneration(large_config()).eval()
    finally:
        torch.set_default_dtype(previous)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    model.save_pretrained(tmp)
    tmp.rename(directory)


def synthetic_batches(adapter, config: LlavaConfig, samples: int, batch_size: int) -> list:
    """<s> 20 text tokens, 576 image placeholders, 43 text tokens; the first row of each batch left-padded by 2."""
    generator = torch.Generator().manual_seed(SEED)
    batches = []
    size = config.vision_config.image_size
    for start in range(0, samples, batch_size):
        rows = min(batch_size, samples - start)
        ids = []
        for row in range(rows):
            pad = 2 if row == 0 else 0
            text = torch.randint(3, 32000, (63 - pad,), generator=generator).tolist()
            ids.append([0] * pad + [1] + text[:20 - pad] + [LARGE_IMAGE_TOKEN] * config.image_seq_length
                       + text[20 - pad:])
        input_ids = torch.tensor(ids)
        inputs = {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(),
                  "pixel_values": torch.randn(rows, 3, size, size, generator=generator).to(torch.bfloat16)}
        batches.append(batch_from_inputs(adapter, inputs, special_ids=(0, 1, 2)))
    return batches


def calibration_batches(model_name: str, large_dir: Path, samples: int, batch_size: int) -> list:
    from shortlvlm.data.calibration import toy_calibration
    from shortlvlm.data.encode import encode_calibration
    from shortlvlm.io.load import load_skeleton

    if model_name == "toy":
        skeleton = load_skeleton("toy")
        _, processor = load("toy")
        return encode_calibration(toy_calibration(samples), processor, get_adapter(skeleton), batch_size=batch_size)
    skeleton = load_skeleton(large_dir)
    return synthetic_batches(get_adapter(skeleton), skeleton.config, samples, batch_size)


def naive_tis_cosine(model, adapter, batches) -> list[float]:
    """TIS-cosine from full output_attentions/output_hidden_states (everything kept until the batch ends)."""
    layers = adapter.num_layers
    sums = torch.zeros(layers, dtype=torch.float64)
    counts = torch.zeros(layers, dtype=torch.float64)
    with torch.inference_mode():
        for batch in batches:
            out = model(**batch.inputs, use_cache=False, output_attentions=True, output_hidden_states=True)
            mask = batch.inputs["attention_mask"].bool()
            seq = mask.shape[1]
            allowed = torch.ones(seq, seq, dtype=torch.bool).tril() & mask[:, None, :]
            tis = sum(token_importance(a.float().mean(1).masked_fill(~allowed, 0), allowed, batch.image, batch.text)
                      for a in out.attentions) / layers
            important = important_token_mask(tis, batch.image, batch.text, TOP_P)
            for layer in range(layers):
                cos = torch.nn.functional.cosine_similarity(out.hidden_states[layer].float(),
                                                            out.hidden_states[layer + 1].float(), dim=-1, eps=1e-12)
                per_sample = (cos * important).sum(1) / important.sum(1).clamp(min=1)
                sums[layer] += per_sample.double().sum()
                counts[layer] += important.any(1).sum()
    return (sums / counts).tolist()


def load_for(mode: str, path: str, offload_dir: str):
    if mode == "accelerate-offload":
        return load(path, device_map="auto", max_memory={"cpu": "2MiB"}, offload_folder=offload_dir)
    if mode.startswith("layerwise"):
        return load(path, layerwise=True)
    if mode == "naive":
        return load(path, attn_implementation="eager")
    return load(path)


def run_work(mode: str, model, batches, out_dir: str) -> list[float]:
    adapter = get_adapter(model)
    context = ScoringContext(model, adapter, batches)
    if mode == "naive":
        return naive_tis_cosine(model, adapter, batches)
    ranking = get_scorer("tis-cosine", tis=TIS(top_p=TOP_P)).rank(context, 1)
    if not mode.endswith("prune"):
        return ranking.scores
    from shortlvlm.jobs.checkpoint import write_checkpoint

    removed = sorted(ranking.order[:round(PRUNE_RATIO * adapter.num_layers)])
    report = compensate(model, adapter, batches, removed, SCP(rank=8, alpha=1.0))
    drop_layers(model, removed, adapter)
    plan = Plan(method="short-lvlm", num_layers_before=adapter.num_layers, removed_layers=removed, compensation="scp",
                layer_scores=ranking.scores, params={"compensation_report": report})
    write_checkpoint(model, None, plan, Path(out_dir) / "pruned")
    return ranking.scores


def measure(model_name: str, mode: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(int(CHILD_ENV["OMP_NUM_THREADS"]))
    path = "toy" if model_name == "toy" else str(args.large_dir)
    batches = calibration_batches(model_name, args.large_dir, args.samples, args.batch_size)
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch, PeakRSS() as peak:
        start = time.perf_counter()
        model, _ = load_for(mode, path, scratch)
        loaded = time.perf_counter()
        scores = run_work(mode, model, batches, scratch)
        done = time.perf_counter()
        del model
    return {"model": model_name, "mode": mode, "peak_above_baseline_mib": (peak.peak_kib - peak.baseline_kib) / 1024,
            "baseline_rss_mib": peak.baseline_kib / 1024, "load_seconds": round(loaded - start, 2),
            "work_seconds": round(done - loaded, 2), "scores": scores, "method": peak.method}


def weights_mib(model_name: str, large_dir: Path) -> float:
    from shortlvlm.testbeds.toy import TOY_CHECKPOINT

    folder = TOY_CHECKPOINT if model_name == "toy" else large_dir
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20


def run_child(model_name: str, mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", f"{model_name}:{mode}", "--large-dir", str(args.large_dir),
               "--samples", str(args.samples), "--batch-size", str(args.batch_size), "--scratch", str(args.scratch)]
    done = subprocess.run(command, env={**os.environ, **CHILD_ENV}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measurement of {model_name} {mode} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    parts = []
    for model_name, entry in result["models"].items():
        parts.append(f"### {model_name}: {entry['description']}\n\nweights on disk: {entry['weights_mib']:.0f} MiB; "
                     f"calibration: {entry['calibration']}\n")
        parts.append("| mode | peak RSS above baseline (MiB) | x weights | load s | work s | "
                     "max abs score diff vs whole |")
        parts.append("|---|---|---|---|---|---|")
        for mode, row in entry["modes"].items():
            diff = row["max_abs_score_diff_vs_whole"]
            parts.append(f"| {mode} | {row['peak_above_baseline_mib']:.0f} | "
                         f"{row['peak_above_baseline_mib'] / entry['weights_mib']:.2f} | {row['load_seconds']:.1f} | "
                         f"{row['work_seconds']:.1f} | {'-' if diff is None else f'{diff:.3g}'} |")
        parts.append("")
    return "\n".join(parts)


def score_difference(scores: list[float], reference: list[float], last_layer: bool) -> float:
    pairs = list(zip(scores, reference, strict=True))
    if not last_layer:
        pairs = pairs[:-1]
    return max(abs(a - b) for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="toy,large", help="comma-separated: toy, large")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--large-dir", type=Path, default=Path(tempfile.gettempdir()) / "shortlvlm-bench-llava-1.6b")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model_name, mode = args.child.split(":")
        print(json.dumps(measure(model_name, mode, args)))
        return
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    if "large" in models:
        build_large(args.large_dir)
    start = time.time()
    result = {"command": f".venv/bin/python benchmarks/layerwise_memory.py --models {args.models} --modes {args.modes} "
                         f"--samples {args.samples} --batch-size {args.batch_size}",
              "torch": torch.__version__, "transformers": transformers.__version__,
              "python": platform.python_version(), "child_env": CHILD_ENV, "models": {}}
    for model_name in models:
        rows = {}
        for mode in modes:
            rows[mode] = run_child(model_name, mode, args)
            print(f"{model_name} {mode}: peak {rows[mode]['peak_above_baseline_mib']:.0f} MiB, load "
                  f"{rows[mode]['load_seconds']} s, work {rows[mode]['work_seconds']} s", file=sys.stderr)
        reference = rows.get("whole", {}).get("scores")
        for mode, row in rows.items():
            row["max_abs_score_diff_vs_whole"] = (None if reference is None or mode == "whole" else
                                                  score_difference(row["scores"], reference, mode != "naive"))
        description = ("the bundled toy LVLM (LLaVA: 16-layer Llama, width 128), float32" if model_name == "toy" else
                       "LLaVA-1.5-shaped random model, bfloat16: CLIP ViT-L/14-336 (24 layers) + Llama 24 layers x "
                       "2048 (intermediate 5504, vocab 32064), 1.6 B parameters")
        calibration = (f"{args.samples} bundled calibration samples, batch {args.batch_size}" if model_name == "toy"
                       else f"{args.samples} synthetic samples of 640 tokens (576 image), batch {args.batch_size}")
        result["models"][model_name] = {"description": description, "calibration": calibration,
                                        "weights_mib": weights_mib(model_name, args.large_dir), "modes": rows}
    result["seconds"] = round(time.time() - start, 1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layerwise_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (out / "layerwise_memory.md").write_text(
        "# Calibration memory by execution mode (issue 8)\n\n"
        f"Command: `{result['command']}`\n\n"
        f"torch {result['torch']}, transformers {result['transformers']}, Python {result['python']}, CPU only, "
        f"2 threads. Peak RSS is measured from just before the model is loaded to the end of the job (VmHWM after "
        f"a clear_refs reset, fresh subprocess per row, env "
        f"{' '.join(f'{k}={v}' for k, v in CHILD_ENV.items())}). 'max abs score diff' compares each mode's "
        f"layer scores with the whole-model pass (naive: layers 0..L-2, its last state is post-norm).\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
