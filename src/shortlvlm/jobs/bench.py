"""The bench job: several models' speed and memory, measured interleaved in one process (shortlvlm.speed)."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import torch
from torch import nn

from shortlvlm.errors import ShortLVLMError
from shortlvlm.eval.generate import check_can_answer
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.io.fingerprint import model_fingerprint
from shortlvlm.io.output import claim_output
from shortlvlm.io.save import check_output_file
from shortlvlm.io.source import resolve_model_name
from shortlvlm.jobs.source import ModelSource
from shortlvlm.options import Options, is_bool, option, options
from shortlvlm.plan import PLAN_FILENAME, Plan
from shortlvlm.speed import DEFAULT_PROMPT, bench_warnings, run_bench

logger = logging.getLogger(__name__)


@options
class BenchRequest(Options):
    """How the bench job times its models: rounds, warm-up, answer length, and the image and prompt asked."""

    rounds: int = option(10, help="measured rounds per model")
    warmup: int = option(2, help="unmeasured rounds first")
    answer_tokens: int = option(16, help="tokens generated per sample")
    prompt: str = option(DEFAULT_PROMPT, help="question asked")
    image: str | None = option(None, help="image file to ask about (default: a synthetic test pattern)")
    overwrite: bool = option(False, check=is_bool, help="replace --out if it exists")

    def __post_init__(self) -> None:
        super().__post_init__()
        counts = (self.rounds, self.warmup, self.answer_tokens)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts) or \
                self.rounds < 1 or self.warmup < 0 or self.answer_tokens < 2:
            raise ShortLVLMError("--rounds must be >= 1, --warmup >= 0 and --answer-tokens >= 2")


def run_bench_job(sources: list[ModelSource], out: Path, request: BenchRequest) -> list[dict]:
    """One row per model (the first is the reference); raw timings and the environment go to `out`."""
    out, overwrite, image = Path(out), request.overwrite, request.image
    check_output_file(out, overwrite, "bench results", "bench.json")
    picture = None
    if image is not None:
        from PIL import Image, UnidentifiedImageError

        try:
            picture = Image.open(image).convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise ShortLVLMError(f"cannot read --image {image}: {err}") from err
    origins = []
    for source in sources:  # a wrong path, or a model that cannot answer, fails before any model loads
        skeleton = source.skeleton()
        check_can_answer(skeleton, source.adapter(skeleton))
        origins.append(pruned_from(source.name, skeleton))
    check_one_origin([source.name for source in sources], origins)
    names = [source.name for source in sources]
    labels = [name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names)]
    first = sources[0]
    with claim_output(out, overwrite=overwrite):
        rows = run_bench([(label, lambda s=source: s.load()) for label, source in zip(labels, sources, strict=True)],
                         rounds=request.rounds, warmup=request.warmup, answer_tokens=request.answer_tokens,
                         prompt=request.prompt, image=picture,
                         layer_count=lambda model: first.adapter(model).num_layers)
        settings = {name: value for name, value in request.to_dict().items() if name != "overwrite"}
        result = {"config": {"models": names, **settings, "dtype": first.loading.dtype,
                             "device_map": first.loading.device_map},
                  "environment": {"torch": torch.__version__, "platform": platform.platform(),
                                  "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                                  "threads": torch.get_num_threads()},
                  "rows": rows, "warnings": bench_warnings(rows)}
        write_text_atomically(out, json.dumps(result, indent=2) + "\n", overwrite=overwrite)
    return rows


def pruned_from(name: str, skeleton: nn.Module) -> str | None:
    """The config hash of the model `name` is (unpruned) or was pruned from (its pruning_plan.json's record);
    None for a checkpoint whose plan does not record it (written before plans did)."""
    plan_file = Path(resolve_model_name(name)) / PLAN_FILENAME
    if plan_file.is_file():
        plan = Plan.load(plan_file)
        if plan.removed_layers:
            return plan.model.get("fingerprint") if isinstance(plan.model, dict) else None
    return model_fingerprint(skeleton)


def check_one_origin(names: list[str], origins: list[str | None]) -> None:
    """Speedups compare the first model with itself or its pruned versions: refuse any other model."""
    reference = origins[0]
    for name, origin in zip(names[1:], origins[1:], strict=True):
        if reference is None or origin is None:
            unknown = names[0] if reference is None else name
            logger.warning(f"{unknown}'s pruning_plan.json does not record the config hash of the model it "
                f"was pruned from, so bench cannot check that {name} and {names[0]} are one model before/after "
                "pruning; its speedups assume they are")
        elif origin != reference:
            raise ShortLVLMError(
                f"{name} is not {names[0]} or a pruned version of it (config hash {origin}, {names[0]}'s {reference}), "
                "so a speedup between them would mean nothing: bench a model with its pruned versions, the unpruned "
                "one first, and other models in separate runs")
