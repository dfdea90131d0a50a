"""`shapes`: the bundled toy task's held-out test split (generated, no data folder), scored per question family.

The split is generated from fixed seeds, question by question, so it has no file to run out of:
`SPLIT_SIZE` bounds it. Its first `DEFAULT_SIZE` questions are the benchmark (`--limit` left out);
`--limit N` takes its first N (the project's tables use 1200), and a limit past the split is refused
rather than answered: `--limit 100000` once ran for 854 s on the toy.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from shortlvlm.data.benchmarks.base import BenchSample
from shortlvlm.data.errors import BenchmarkDataError
from shortlvlm.testbeds.toy.data import FAMILIES, make_split

NAME = "shapes"
NEEDS_DATA = False
HEADLINE = ("accuracy",)
LAYOUT = "(generated from shortlvlm.testbeds.toy.data; no files needed)"
DEFAULT_SIZE = 600  # 100 questions per family
SPLIT_SIZE = 10_000  # the test split's extent: about 85 s of answers on the toy, and hours on smol-llava
LIMIT_HELP = f"the first N of its generated test split; default {DEFAULT_SIZE}, at most {SPLIT_SIZE}"


def load_shapes(limit: int | None = None, split: str = "test", start: int = 0) -> list[BenchSample]:
    """`limit` (default 600) questions of a split from index `start`; families are interleaved, so balanced."""
    samples = []
    for toy in make_split(split, limit or DEFAULT_SIZE, start=start):
        meta = {"family": toy.family, **({"pope": toy.meta["pope"]} if "pope" in toy.meta else {})}
        samples.append(BenchSample(id=toy.id, image_path=None, image=toy.image(), question=toy.question,
                                   answer=toy.answer, meta=meta))
    return samples


def load(root: Path | None, limit: int | None) -> list[BenchSample]:
    """The registry's reader: the first `limit` questions of the test split (the data folder is not used)."""
    if limit is not None and limit > SPLIT_SIZE:
        raise BenchmarkDataError(
            f"--limit {limit}: the shapes test split is generated and holds {SPLIT_SIZE} questions (the first "
            f"{DEFAULT_SIZE} without --limit); give --limit {SPLIT_SIZE} or fewer")
    return load_shapes(limit)


def normalize(text: str) -> str:
    """The first word of an answer, lower-cased (letters of multiple choice upper-cased)."""
    words = text.strip().split()
    if not words:
        return ""
    word = words[0].strip(".,:;!?()").lower()
    return word.upper() if len(word) == 1 and word.isalpha() else word


def score_shapes(samples: list[BenchSample], predictions: dict[str, str]) -> dict:
    """Accuracy (%) overall, per family, and per POPE negative-sampling strategy of `exists`."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for sample in samples:
        correct = normalize(predictions.get(sample.id, "")) == normalize(sample.answer)
        hits[sample.meta["family"]].append(correct)
        if "pope" in sample.meta:
            hits[f"exists/{sample.meta['pope']}"].append(correct)
    rate = lambda values: round(100 * sum(values) / len(values), 2)  # noqa: E731
    per_family = {f: rate(hits[f]) for f in FAMILIES if hits[f]}
    return {
        "benchmark": NAME,
        "num_samples": len(samples),
        "accuracy": rate([h for f in FAMILIES for h in hits[f]]),
        "per_family": per_family,
        "pope_strategies": {k.split("/")[1]: rate(v) for k, v in hits.items() if k.startswith("exists/")},
    }


def score(samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False) -> dict:
    """The registry's scorer: the toy has one answer rule (`normalize`), so `lenient` changes nothing."""
    return score_shapes(samples, predictions)
