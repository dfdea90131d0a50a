"""Every resume key in one place: what each saved result depends on, so a result is reused only by the job
whose result it would be. Algorithms never build keys; the jobs that cache their results do, here.

Keys name the model (config fingerprint and dtype; the weights files through a StageCache's
`identity`, an evaluation's weights stamp or the comparison's weights fingerprint), the calibration
samples (their hash, not where they were read from) and batching, and the options the result
depends on, and nothing else: SCP's gap statistics do not depend on its rank or a numeric alpha, so
those may change between runs of the same job. An evaluation's answers depend on the model that
gave them (other weights in the same folder answer again) and on how they were generated: the
batch size (padding changes the text) and the generation settings (greedy, new-token budget,
prompt format), not on the scoring (`lenient` re-reads the same answers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from shortlvlm.compensation import Compensation
from shortlvlm.data.calibration_set import CalibrationSet
from shortlvlm.io.fingerprint import model_fingerprint, weights_fingerprint, weights_stamp
from shortlvlm.scoring import Scorer, scorer_to_dict

if TYPE_CHECKING:
    from shortlvlm.jobs.compare_spec import CompareRequest


def _model_and_data(model: nn.Module, calibration: CalibrationSet | None, batch_size: int) -> dict:
    return {"model": model_fingerprint(model), "dtype": str(next(model.parameters()).dtype),
            "calibration": calibration.hash if calibration is not None else None, "batch_size": batch_size}


# Which tokens the loss-based scorers score; changing the rule must not reuse plans scored under the old
# one (before: every token after the prompt, ChatML's newline after `<|im_end|>` included; design §2.4).
ANSWER_TOKENS = "prompt end to answer text end"


def plan_key(model: nn.Module, calibration: CalibrationSet | None, batch_size: int, *, method: str, count: int,
             scorer: Scorer) -> dict:
    """A scored plan: model, data, the method and its scorer's options, and how many layers go."""
    return {**_model_and_data(model, calibration, batch_size), "method": method, "count": count,
            "scorer": scorer_to_dict(scorer), "answer_tokens": ANSWER_TOKENS}


def gaps_key(model: nn.Module, calibration: CalibrationSet, batch_size: int, *, removed: list[int],
             compensation: Compensation) -> dict:
    """A compensation's statistics: model, data, the removed layers, and the options they depend on (for SCP the
    tokens, normalisation and a fitted alpha's writers, not the rank or a numeric alpha; for the least-squares
    bridge the tokens and streams, and the ridge and prior only for sequential streams)."""
    # SCP's keys stay as older versions wrote them, so their saved statistics are still found.
    extra = {"compensation": compensation.name} if compensation.name != "scp" else {}
    return {**_model_and_data(model, calibration, batch_size), "removed": sorted(removed), **extra,
            **compensation.statistics_key()}


def answers_key(model: nn.Module, model_name: str, *, bench: str, data: str | None, limit: int | None,
                batch_size: int, generation: dict) -> dict:
    """An evaluation's answers: the model (as named, its config, dtype and weights stamp), benchmark, data
    folder, question count, and the batch size and generation settings the answers were generated with."""
    return {"model": model_name, "config": model_fingerprint(model), "weights": weights_stamp(model_name),
            "dtype": str(next(model.parameters()).dtype), "bench": bench, "data": data, "limit": limit,
            "batch_size": batch_size, "generation": generation}


def comparison_key(model_name: str, request: CompareRequest, *, num_questions: int,
                   calibration: CalibrationSet | None) -> dict:
    """A comparison's results file: the model and its weights, the benchmark, every setting compared, and how its
    count-dependent scorers rank (once for the largest ratio, or per ratio)."""
    return {"model": model_name, "weights": weights_fingerprint(model_name), "bench": request.bench,
            "data": request.data, "num_questions": num_questions, "methods": list(request.methods),
            "ratios": list(request.ratios), "seed": request.seed, "rankings": request.rankings,
            "calibration": {"num_samples": len(calibration.samples) if calibration else 0,
                            "hash": calibration.hash if calibration else None}}
