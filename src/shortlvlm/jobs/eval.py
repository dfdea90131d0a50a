"""The eval job: answer a benchmark with a model, resumably, and write metrics and per-sample answers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from shortlvlm.data.benchmarks import NAMES, check_scoring, load_benchmark, mmbench, shapes
from shortlvlm.eval.evaluate import AnswerLog, evaluate
from shortlvlm.eval.generate import check_can_answer, generation_settings
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.io.output import claim_output
from shortlvlm.io.save import check_output_file
from shortlvlm.jobs.source import ModelSource
from shortlvlm.options import Options, is_bool, option, options, positive_count, positive_int
from shortlvlm.resume.keys import answers_key

logger = logging.getLogger(__name__)


@options
class EvalRequest(Options):
    """Which benchmark the eval job answers, on which data, and how the answers are read."""

    bench: str = option(choices=NAMES, help="benchmark to answer")
    data: str | None = option(None, help="the benchmark's folder (not needed for shapes, nor for easy-vqa when the "
                                         "easy-vqa package is installed)")
    limit: int | None = option(None, help=f"answer only the first N questions (shapes: {shapes.LIMIT_HELP})")
    eval_batch_size: int = option(16, parse=positive_count, check=positive_int, help="generation batch size")
    lenient: bool = option(False, check=is_bool,
                           help="read answers leniently ('B.', '(b)', an option's text, normalised short answers) "
                                "instead of exactly as the official scripts do; the results say \"parser\": "
                                "\"lenient\" and are not comparable with published numbers")
    mmbench_policy: str = option("exact", choices=mmbench.POLICIES,
                                 help="MMBench answers its rules cannot read (e.g. 'The answer is A'), which the "
                                      "official evaluator gives a GPT judge: 'exact' counts them wrong, as VLMEvalKit "
                                      "without a judge; 'lmms-eval' takes the letter lmms-eval's offline extraction "
                                      "finds, as its mmbench_en_dev_static task. The results say \"mmbench_policy\"")
    overwrite: bool = option(False, check=is_bool, help="replace --out if it exists")


def run_eval(source: ModelSource, out: Path, request: EvalRequest) -> dict:
    """The benchmark's metrics; results (with answers) go to `out`, answers so far beside it while running."""
    out, bench, data, limit = Path(out), request.bench, request.data, request.limit
    overwrite, lenient, mmbench_policy = request.overwrite, request.lenient, request.mmbench_policy
    batch_size = request.eval_batch_size
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
                                        resume=AnswerLog(partial, key), lenient=lenient,
                                        mmbench_policy=mmbench_policy)
        write_text_atomically(out, json.dumps({"model": source.name, **metrics, "request": request.to_dict(),
                                               "predictions": predictions}, indent=2) + "\n", overwrite=overwrite)
        partial.unlink(missing_ok=True)
    return metrics
