"""The bench job: several models' speed and memory, measured interleaved in one process (shortlvlm.speed)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from shortlvlm.errors import ShortLVLMError
from shortlvlm.eval.generate import check_can_answer
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.io.output import claim_output
from shortlvlm.io.save import check_output_file
from shortlvlm.jobs.source import ModelSource, stderr
from shortlvlm.speed import bench_warnings, run_bench


def run_bench_job(sources: list[ModelSource], out: Path, *, rounds: int = 10, warmup: int = 2, answer_tokens: int = 16,
                  prompt: str, image: str | None = None, overwrite: bool = False, log=stderr) -> list[dict]:
    """One row per model (the first is the reference); raw timings and the environment go to `out`."""
    out = Path(out)
    check_output_file(out, overwrite, "bench results", "bench.json")
    if rounds < 1 or warmup < 0 or answer_tokens < 2:
        raise ShortLVLMError("--rounds must be >= 1, --warmup >= 0 and --answer-tokens >= 2")
    picture = None
    if image is not None:
        from PIL import Image, UnidentifiedImageError

        try:
            picture = Image.open(image).convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise ShortLVLMError(f"cannot read --image {image}: {err}") from err
    for source in sources:  # a wrong path, or a model that cannot answer, fails before any model loads
        skeleton = source.skeleton()
        check_can_answer(skeleton, source.adapter(skeleton))
    names = [source.name for source in sources]
    labels = [name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names)]
    first = sources[0]
    with claim_output(out, overwrite=overwrite):
        rows = run_bench([(label, lambda s=source: s.load(log)) for label, source in zip(labels, sources, strict=True)],
                         rounds=rounds, warmup=warmup, answer_tokens=answer_tokens, prompt=prompt, image=picture,
                         layer_count=lambda model: first.adapter(model).num_layers)
        result = {"config": {"models": names, "rounds": rounds, "warmup": warmup, "answer_tokens": answer_tokens,
                             "prompt": prompt, "image": image, "dtype": first.loading.dtype,
                             "device_map": first.loading.device_map},
                  "environment": {"torch": torch.__version__, "platform": platform.platform(),
                                  "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                                  "threads": torch.get_num_threads()},
                  "rows": rows, "warnings": bench_warnings(rows)}
        write_text_atomically(out, json.dumps(result, indent=2) + "\n", overwrite=overwrite)
    return rows
