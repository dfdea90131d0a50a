"""The eval job: answer a benchmark with a model, resumably, and write metrics and per-sample answers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from shortlvlm.data.benchmarks import check_scoring, load_benchmark
from shortlvlm.eval.evaluate import evaluate
from shortlvlm.eval.generate import check_can_answer, generation_settings
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.io.output import claim_output
from shortlvlm.io.save import check_output_file
from shortlvlm.jobs.source import ModelSource
from shortlvlm.resume.keys import answers_key

logger = logging.getLogger(__name__)


def run_eval(source: ModelSource, bench: str, out: Path, *, data: str | None = None, limit: int | None = None,
             batch_size: int = 16, overwrite: bool = False,
             lenient: bool = False, mmbench_policy: str = "exact") -> dict:
    """The benchmark's metrics; results (with answers) go to `out`, answers so far beside it while running."""
    out = Path(out)
    check_output_file(out, overwrite, "results", "results.json")
    check_scoring(bench, lenient=lenient, mmbench_policy=mmbench_policy)
    samples = load_benchmark(bench, data, limit)  # bad data fails before the load
    skeleton = source.skeleton()
    check_can_answer(skeleton, source.adapter(skeleton))
    del skeleton
    with claim_output(out, overwrite=overwrite):
        model, processor = source.load()
        # Answers are appended to a hidden file beside `out` as they come; the same job resumes from it.
        partial = out.with_name(f".{out.name}.partial.jsonl")
        key = answers_key(model, source.name, bench=bench, data=data, limit=limit, batch_size=batch_size,
                          generation=generation_settings())
        metrics, predictions = evaluate(model, processor, bench, samples, batch_size=batch_size,
                                        resume_file=partial, resume_key=key, lenient=lenient,
                                        mmbench_policy=mmbench_policy)
        write_text_atomically(out, json.dumps({"model": source.name, **metrics, "predictions": predictions},
                                              indent=2) + "\n", overwrite=overwrite)
        partial.unlink(missing_ok=True)
    return metrics
