"""Capture memory: peak memory of shortlvlm's capture pass against a plain eager forward pass.

    .venv/bin/python benchmarks/capture_memory.py [--batch-size 2] [--layers 8] [--hidden 512]
        [--repeats 3] [--out-dir benchmarks/results]

The requirement being measured: "the capture pass peaks at no more than ~1.3x the memory of a
plain eager forward pass on the same batch". The model is a LLaVA-1.5 shaped
LlavaForConditionalGeneration built from config with random weights (Llama text model, small
CLIP tower at 336 px / patch 14, so 576 image tokens) on CPU in float32; every row holds 576
image tokens and 64 text tokens (row 0 starts with 1-3 left pads). Modes:
- plain: `model(**inputs, use_cache=False)` with eager attention under inference_mode;
- capture-score: `capture()` feeding LayerSimilarity + TokenImportance(all layers, top_p 0.5),
  attention hooks on every layer (what `shortlvlm score` runs);
- capture-scp: `capture()` feeding GapStatistics(runs of [2, 3, 4], fit=False) + the same
  TokenImportance (what SCP runs);
- naive: one forward with output_attentions and output_hidden_states, outputs kept alive (what a
  non-streaming implementation holds), for contrast.

How the peak is measured. Every (mode, repeat) runs in a fresh subprocess so peaks never mix.
The child builds the model and batch, runs the mode once as a warm-up (so code pages of the
kernels and one-time buffers of oneDNN/transformers are already resident and do not count as the
mode's memory), drops the result, runs gc and malloc_trim, reads VmRSS as the baseline, resets
the kernel's peak-RSS counter (writing "5" to /proc/self/clear_refs sets VmHWM to the current
RSS), runs the mode again and reads VmHWM. Peak above baseline = VmHWM - baseline.
- VmHWM is maintained by the kernel on every page fault, so no short-lived spike is missed; a
  sampling thread polling VmRSS every ~1 ms can miss a [B, H, T, T] temporary that lives for less
  than a millisecond, and getrusage's ru_maxrss cannot be reset, so the model-construction peak
  would hide the forward pass. If clear_refs is not writable the child falls back to a 1 ms VmRSS
  sampler (reported in the "method" field).
- The children run with MALLOC_MMAP_THRESHOLD_=65536: glibc otherwise raises its mmap threshold
  after the first large free (up to 32 MiB) and serves later tensors from heap free lists that
  are already resident, so RSS would stop tracking live tensor memory. With a fixed low
  threshold every tensor above 64 KiB is its own mapping, returned to the OS when freed.
Ratios are medians of the repeats' peaks divided by the median plain peak. Measured, never
asserted (tests do not depend on it).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import transformers
from transformers import LlavaConfig, LlavaForConditionalGeneration

from shortlvlm.capture import CalibrationBatch, batch_from_inputs, capture
from shortlvlm.compensation import GapStatistics, removed_runs
from shortlvlm.importance import TokenImportance
from shortlvlm.models import get_adapter
from shortlvlm.scoring.tis_cosine import LayerSimilarity
from shortlvlm.testbeds.tiny.common import build_ids, rand_pixels

MODES = ("plain", "capture-score", "capture-scp", "naive")
SCP_REMOVED = [2, 3, 4]
TOP_P = 0.5
SEED = 0
VOCAB = 1000
HEADS = 8
PAD, BOS, EOS, IMAGE_TOKEN = 0, 1, 2, VOCAB - 1
IMAGE_SIZE, PATCH = 336, 14  # CLIP ViT-L/14-336 geometry: 24 x 24 = 576 patches (CLS dropped)
TEXT_BEFORE, TEXT_AFTER = 20, 43  # with <s>: 64 text tokens per row, as in a short LLaVA-1.5 prompt
VISION = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4)
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}


def llava_config(layers: int, hidden: int) -> LlavaConfig:
    """LLaVA-1.5 layout at a small width: CLIP 336/14 tower + Llama text model, float32, eager attention."""
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=IMAGE_SIZE, patch_size=PATCH, **VISION),
        text_config=dict(
            model_type="llama", vocab_size=VOCAB, hidden_size=hidden, intermediate_size=round(hidden * 2.75),
            num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=HEADS,
            max_position_embeddings=2048, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        ),
        image_token_index=IMAGE_TOKEN,
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        dtype="float32",
    )
    config._attn_implementation = "eager"
    return config


def llava_inputs(config: LlavaConfig, batch_size: int) -> dict[str, torch.Tensor]:
    """``<s> text <image>*576 text`` rows (row 0 left-padded) and random pixels."""
    gen = torch.Generator().manual_seed(SEED)
    layout = [[BOS], TEXT_BEFORE, [IMAGE_TOKEN] * config.image_seq_length, TEXT_AFTER]
    input_ids, attention_mask = build_ids(layout, batch_size, PAD, gen)
    pixel_values = rand_pixels((batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), gen)
    return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)


def run_mode(mode: str, model, adapter, batch: CalibrationBatch, hidden: int):
    """Run one mode on the batch; returns what the mode keeps alive (only `naive` keeps anything)."""
    layers = list(range(adapter.num_layers))
    if mode == "plain":
        with torch.inference_mode():
            model(**batch.inputs, use_cache=False)
        return None
    if mode == "capture-score":
        collector = LayerSimilarity(adapter.num_layers, TokenImportance(layers, TOP_P))
        capture(model, adapter, [batch], collector, attention_layers=layers)
        return None
    if mode == "capture-scp":
        collector = GapStatistics(removed_runs(SCP_REMOVED), TokenImportance(layers, TOP_P), fit=False, dim=hidden)
        capture(model, adapter, [batch], collector, attention_layers=layers)
        return None
    if mode == "naive":
        with torch.inference_mode():
            return model(**batch.inputs, use_cache=False, output_attentions=True, output_hidden_states=True)
    raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")


# ------------------------------------------------------------------------------------------
# Child side: one measurement
# ------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def _release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak resident memory above the RSS at entry: kernel VmHWM after a reset, else a 1 ms sampler."""

    def __enter__(self) -> PeakRSS:
        _release_memory()
        self.baseline_kib = _status_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM after clear_refs reset"
        except OSError:
            self.method = "VmRSS sampled every 1 ms"
            self.sampled_kib = self.baseline_kib
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.001):
            self.sampled_kib = max(self.sampled_kib, _status_kib("VmRSS"))

    def __exit__(self, *exc) -> None:
        if self.method.startswith("VmHWM"):
            self.peak_kib = _status_kib("VmHWM")
        else:
            self.stop.set()
            self.thread.join()
            self.peak_kib = max(self.sampled_kib, _status_kib("VmRSS"))


def measure(mode: str, batch_size: int, layers: int, hidden: int) -> dict:
    """Build model and batch, warm the mode up once, then measure its peak above the baseline."""
    torch.set_num_threads(1)
    config = llava_config(layers, hidden)
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, llava_inputs(config, batch_size), special_ids=(PAD, BOS, EOS))
    kept = run_mode(mode, model, adapter, batch, hidden)  # warm-up
    del kept
    start = time.perf_counter()
    with PeakRSS() as peak:
        kept = run_mode(mode, model, adapter, batch, hidden)
    seconds = time.perf_counter() - start
    del kept
    return {
        "mode": mode,
        "peak_above_baseline_mib": (peak.peak_kib - peak.baseline_kib) / 1024,
        "baseline_rss_mib": peak.baseline_kib / 1024,
        "seconds": round(seconds, 2),
        "method": peak.method,
    }


# ------------------------------------------------------------------------------------------
# Parent side: fresh subprocess per measurement, medians, report
# ------------------------------------------------------------------------------------------
def run_child(mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--batch-size", str(args.batch_size),
               "--layers", str(args.layers), "--hidden", str(args.hidden)]
    done = subprocess.run(command, env={**os.environ, **CHILD_ENV}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measurement of {mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def reproduce_command(args: argparse.Namespace) -> str:
    return (f".venv/bin/python benchmarks/capture_memory.py --batch-size {args.batch_size} --layers {args.layers} "
            f"--hidden {args.hidden} --repeats {args.repeats}")


def markdown_table(summary: dict) -> str:
    lines = ["| mode | peak above baseline (MiB, median) | runs (MiB) | ratio vs plain |", "|---|---|---|---|"]
    for mode, row in summary.items():
        runs = ", ".join(f"{v:.1f}" for v in row["runs_mib"])
        lines.append(f"| {mode} | {row['median_mib']:.1f} | {runs} | {row['ratio_vs_plain']:.2f}x |")
    return "\n".join(lines)


def shapes(args: argparse.Namespace) -> dict:
    config = llava_config(args.layers, args.hidden)
    text = config.text_config
    seq = 1 + TEXT_BEFORE + config.image_seq_length + TEXT_AFTER
    return {
        "model": (f"LlavaForConditionalGeneration (random weights, float32, CPU, eager attention): Llama "
                  f"{text.num_hidden_layers} layers, hidden {text.hidden_size}, {text.num_attention_heads} heads, "
                  f"intermediate {text.intermediate_size}, vocab {text.vocab_size}; CLIP {IMAGE_SIZE}px/patch "
                  f"{PATCH}, hidden {VISION['hidden_size']}, {VISION['num_hidden_layers']} layers"),
        "batch": (f"{args.batch_size} x {seq} tokens ({config.image_seq_length} image + "
                  f"{seq - config.image_seq_length} text per row; row 0 starts with 1-3 left pads)"),
        "attention_map_mib_per_layer": args.batch_size * text.num_attention_heads * seq * seq * 4 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch_size, args.layers, args.hidden)))
        return
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    start = time.time()
    for repeat in range(args.repeats):  # round-robin, so slow drift hits every mode alike
        for mode in MODES:
            runs[mode].append(run_child(mode, args))
            print(f"[{repeat + 1}/{args.repeats}] {mode}: {runs[mode][-1]['peak_above_baseline_mib']:.1f} MiB",
                  file=sys.stderr)
    medians = {mode: statistics.median(r["peak_above_baseline_mib"] for r in rows) for mode, rows in runs.items()}
    summary = {
        mode: {"median_mib": round(medians[mode], 2),
               "runs_mib": [round(r["peak_above_baseline_mib"], 2) for r in rows],
               "ratio_vs_plain": round(medians[mode] / medians["plain"], 3),
               "baseline_rss_mib": [round(r["baseline_rss_mib"], 1) for r in rows],
               "seconds": [r["seconds"] for r in rows]}
        for mode, rows in runs.items()
    }
    info = shapes(args)
    result = {
        "command": reproduce_command(args), **info, "repeats": args.repeats, "method": runs["plain"][0]["method"],
        "child_env": CHILD_ENV, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "seconds": round(time.time() - start, 1), "modes": summary,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "capture_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(summary)
    (out / "capture_memory.md").write_text(
        "# Capture memory: peak above the post-load baseline\n\n"
        f"Command: `{result['command']}`\n\n"
        f"- model: {info['model']}\n- batch: {info['batch']}\n"
        f"- one layer's [B, H, T, T] float32 attention map: {info['attention_map_mib_per_layer']:.1f} MiB\n"
        f"- torch {torch.__version__}, transformers {transformers.__version__}, Python {result['python']}, "
        f"1 thread\n- method: {result['method']} in a fresh subprocess per run (after one warm-up run of "
        f"the same mode), env {' '.join(f'{k}={v}' for k, v in CHILD_ENV.items())}; median of "
        f"{args.repeats} runs\n\n{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
