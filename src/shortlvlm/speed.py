"""`shortlvlm bench`: speed and memory of several models measured side by side in one process.

Every round runs each model once in turn (A B C A B C ...), so drifts of a shared, noisy machine
hit all models alike; the reported numbers are medians over the rounds after warm-up, and ratios
are taken against the first model. Per round and model, on one fixed image + prompt, batch 1:
- prefill latency: one forward pass over the prompt (building the KV cache);
- a benchmark-style sample: greedy generation of exactly `answer_tokens` tokens (EOS ignored, so
  every model does the same work), whose inverse is samples/s (the paper's speed metric);
- decode tokens/s: (answer_tokens - 1) / (time of that generation - time of a 1-token one);
- peak memory: the model's parameter bytes plus the peak growth during the sample (CUDA: peak
  allocation; CPU: resident set, via the Linux VmHWM counter; not reported where unavailable).
Each timing's spread (quartiles, extremes) is reported with it, and `bench_warnings` says when a
timing is noisy or a speedup exceeds the ideal L0/L by more than the noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from shortlvlm.errors import ShortLVLMError
from shortlvlm.eval.generate import conversation
from shortlvlm.io.offload import input_device
from shortlvlm.log import progress_bar

DEFAULT_PROMPT = "Describe the image in detail."


@dataclass
class BenchModel:
    """A loaded model under test and its measurements (seconds per round)."""

    label: str
    model: nn.Module
    processor: object
    num_layers: int
    inputs: dict = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=lambda: {"prefill": [], "generate_1": [],
                                                                     "generate_n": [], "peak_bytes": []})


def synthetic_image(size: int = 336):
    """A deterministic RGB test pattern (no file needed)."""
    from PIL import Image

    x = torch.arange(size)
    red = (x[None, :] * 255 // max(size - 1, 1)).expand(size, size)
    green = (x[:, None] * 255 // max(size - 1, 1)).expand(size, size)
    blue = ((x[None, :] // 16 + x[:, None] // 16) % 2) * 255
    pixels = torch.stack([red, green, blue], dim=-1).to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def bench_inputs(model: nn.Module, processor, image, prompt: str) -> dict:
    """The processor's batch-1 inputs for the image and prompt, on the model's device."""
    text = processor.apply_chat_template(conversation(prompt), add_generation_prompt=True)
    return processor(images=[image], text=[text], return_tensors="pt").to(input_device(model))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resident_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block: CUDA peak allocation, or resident growth (VmHWM reset) on Linux CPUs."""

    def __init__(self, device: torch.device):
        self.device, self.peak_bytes = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                self.start = _resident_kib("VmRSS")
            except OSError:
                self.start = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self.start
        elif self.start is not None:
            peak = _resident_kib("VmHWM")
            self.peak_bytes = None if peak is None else max(peak - self.start, 0) * 1024


def parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@torch.inference_mode()
def measure_round(entry: BenchModel, answer_tokens: int) -> None:
    """One prefill, one 1-token and one `answer_tokens` generation of one model; appends timings."""
    model, device = entry.model, input_device(entry.model)
    tokenizer = getattr(entry.processor, "tokenizer", entry.processor)
    fixed = dict(do_sample=False, pad_token_id=tokenizer.pad_token_id)
    _sync(device)
    start = time.perf_counter()
    model(**entry.inputs, use_cache=True)
    _sync(device)
    entry.rounds["prefill"].append(time.perf_counter() - start)
    start = time.perf_counter()
    model.generate(**entry.inputs, max_new_tokens=1, min_new_tokens=1, **fixed)
    _sync(device)
    entry.rounds["generate_1"].append(time.perf_counter() - start)
    with PeakMemory(device) as peak:
        start = time.perf_counter()
        output = model.generate(**entry.inputs, max_new_tokens=answer_tokens, min_new_tokens=answer_tokens, **fixed)
        _sync(device)
        entry.rounds["generate_n"].append(time.perf_counter() - start)
    generated = output.shape[1] - entry.inputs["input_ids"].shape[1]
    if generated != answer_tokens:
        raise ShortLVLMError(f"{entry.label} generated {generated} tokens instead of {answer_tokens}; "
                             "its generation config overrides min_new_tokens, so the models did different work")
    if peak.peak_bytes is not None:
        # Other models share the process, so: this model's weights + the growth during its sample.
        entry.rounds["peak_bytes"].append(parameter_bytes(model) + peak.peak_bytes)


# A timing whose interquartile range is more than this fraction of its median is called noisy. Six rounds
# of the toy and its 11-layer cut, one CPU core with a training job on the other, spread 1.5% to 13%.
NOISY = 0.25


def spread(samples: list[float]) -> dict:
    """Median, quartiles and extremes of one timing, and its relative spread: the interquartile range over
    the median (with fewer than 4 samples, the full range; with one, 0: unknown)."""
    ordered = sorted(samples)
    median = statistics.median(ordered)
    q1, q3 = statistics.quantiles(ordered, n=4, method="inclusive")[::2] if len(ordered) >= 2 else (median, median)
    width = (q3 - q1) if len(ordered) >= 4 else ordered[-1] - ordered[0]
    return {"min": ordered[0], "q1": q1, "median": median, "q3": q3, "max": ordered[-1], "rounds": len(ordered),
            "relative": width / median if median > 0 else 0.0}


def summarize(entries: list[BenchModel], answer_tokens: int, warmup: int) -> list[dict]:
    """Medians after warm-up, and ratios against the first model (speedups: >1 is faster)."""
    rows = []
    for entry in entries:
        kept = {k: v[warmup:] for k, v in entry.rounds.items()}
        prefill = statistics.median(kept["prefill"])
        sample = statistics.median(kept["generate_n"])
        decode = [(answer_tokens - 1) / (n - one) for n, one in zip(kept["generate_n"], kept["generate_1"], strict=True)
                  if n > one]
        rows.append({
            "model": entry.label, "decoder_layers": entry.num_layers,
            "parameters": sum(p.numel() for p in entry.model.parameters()),
            "peak_memory_mib": statistics.median(kept["peak_bytes"]) / 2**20 if kept["peak_bytes"] else None,
            "prefill_ms": 1000 * prefill, "decode_tokens_per_s": statistics.median(decode) if decode else None,
            "samples_per_s": 1 / sample, "rounds": len(kept["prefill"]),
            "spread": {"prefill": spread(kept["prefill"]), "sample": spread(kept["generate_n"])},
            "raw_seconds": {k: v for k, v in entry.rounds.items() if k != "peak_bytes"},
        })
    base = rows[0]
    for row in rows:
        row["ideal_speedup"] = base["decoder_layers"] / row["decoder_layers"]
        row["prefill_speedup"] = base["prefill_ms"] / row["prefill_ms"]
        row["samples_speedup"] = row["samples_per_s"] / base["samples_per_s"]
        row["decode_speedup"] = (row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
                                 if row["decode_tokens_per_s"] and base["decode_tokens_per_s"] else None)
        row["parameter_ratio"] = row["parameters"] / base["parameters"]
    return rows


def run_bench(
    loaders: list[tuple[str, Callable[[], tuple]]],
    *,
    rounds: int = 10,
    warmup: int = 2,
    answer_tokens: int = 16,
    prompt: str = DEFAULT_PROMPT,
    image=None,
    layer_count: Callable[[nn.Module], int] | None = None,
) -> list[dict]:
    """Load every model, then measure them interleaved for warmup + rounds rounds; summary rows."""
    from shortlvlm.models import get_adapter

    if rounds < 1 or warmup < 0 or answer_tokens < 2:
        raise ValueError("need rounds >= 1, warmup >= 0 and answer_tokens >= 2")
    count = layer_count or (lambda model: get_adapter(model).num_layers)
    image = image if image is not None else synthetic_image()
    entries = []
    for label, load in loaders:
        model, processor = load()
        model.eval()
        entry = BenchModel(label, model, processor, count(model))
        entry.inputs = bench_inputs(model, processor, image, prompt)
        entries.append(entry)
    for _ in progress_bar(range(warmup + rounds), desc="bench rounds", unit="round"):
        for entry in entries:
            measure_round(entry, answer_tokens)
    return summarize(entries, answer_tokens, warmup)


def bench_warnings(rows: list[dict], noisy: float = NOISY) -> list[str]:
    """What makes the measurements untrustworthy: a timing that varies by more than `noisy` of its median,
    or a speedup above the ideal L0/L by more than the two models' spreads together (removing layers
    cannot do more than remove their time; a busy machine can)."""
    warnings, base = [], rows[0]
    for row in rows:
        for name, kind in (("prefill", "prefill"), ("sample", "sample")):
            timing = row["spread"][kind]
            if timing["relative"] > noisy:
                warnings.append(
                    f"{row['model']}: {name} times vary by {100 * timing['relative']:.0f}% of their median "
                    f"({timing['min']:.3g} to {timing['max']:.3g} s over {timing['rounds']} rounds); the machine "
                    "was busy or throttled, so the medians and speedups are uncertain: rerun on an idle machine "
                    "or with more --rounds")
    for row in rows[1:]:
        for name, key, kind in (("prefill", "prefill_speedup", "prefill"), ("samples/s", "samples_speedup", "sample")):
            noise = row["spread"][kind]["relative"] + base["spread"][kind]["relative"]
            if row[key] > row["ideal_speedup"] * (1 + noise):
                warnings.append(
                    f"{row['model']}: {name} speedup {row[key]:.2f}x exceeds the ideal L0/L "
                    f"{row['ideal_speedup']:.3f}x by more than the noise ({100 * noise:.0f}%); removing layers "
                    "cannot save more than their time, so these timings are not trustworthy: rerun on an idle "
                    "machine or with more --rounds")
    return warnings


def spread_lines(rows: list[dict]) -> list[str]:
    """One line per model: each timing's median, interquartile range and extremes."""
    def describe(timing: dict, unit: float, label: str) -> str:
        return (f"{label} {timing['median'] * unit:.3g} (IQR {timing['q1'] * unit:.3g}-{timing['q3'] * unit:.3g}, "
                f"min {timing['min'] * unit:.3g}, max {timing['max'] * unit:.3g}, spread "
                f"{100 * timing['relative']:.1f}%)")

    return [f"{row['model']}: {describe(row['spread']['prefill'], 1000, 'prefill ms')}; "
            f"{describe(row['spread']['sample'], 1, 'sample s')}; {row['rounds']} rounds" for row in rows]


def markdown_table(rows: list[dict]) -> str:
    """One row per model: size, memory, latency, throughput and speedups against the first."""
    def fmt(value, pattern):
        return "-" if value is None else format(value, pattern)

    lines = ["| model | layers | params (M) | peak mem (MiB) | prefill (ms) | decode tok/s | samples/s | "
             "ideal L0/L | prefill speedup | decode speedup | samples/s speedup |",
             "|---" * 11 + "|"]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['decoder_layers']} | {row['parameters'] / 1e6:.2f} | "
            f"{fmt(row['peak_memory_mib'], '.1f')} | {row['prefill_ms']:.2f} | "
            f"{fmt(row['decode_tokens_per_s'], '.1f')} | "
            f"{row['samples_per_s']:.2f} | {row['ideal_speedup']:.3f} | {row['prefill_speedup']:.3f} | "
            f"{fmt(row['decode_speedup'], '.3f')} | {row['samples_speedup']:.3f} |")
    return "\n".join(lines)
