"""What a comparison compares: method settings (`short-lvlm`, `block-influence+scp`, ...) and ratios.

A setting is `METHOD[OPTIONS]+COMPENSATION[OPTIONS]`, both bracketed parts optional, e.g.
`tis-loss[full_steps=2]+lstsq[ridge=0.1,tokens=important]`; the options are the scorer's and the
compensation's own fields (shortlvlm.options.options_from_text), so any stored comparison can be
regenerated from the command line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from shortlvlm.compensation import COMPENSATION_NAMES, COMPENSATIONS, Compensation, compensation_needs_data
from shortlvlm.data.benchmarks import NAMES, shapes
from shortlvlm.errors import ShortLVLMError
from shortlvlm.methods import METHODS, recipe_name
from shortlvlm.options import (
    Options,
    is_bool,
    option,
    options,
    options_from_text,
    positive_count,
    positive_int,
)
from shortlvlm.scoring import SCORERS, Scorer

DEFAULT_METHODS = (
    "tis-loss+lstsq",
    "short-lvlm",
    "tis-cosine",
    "tis-loss",
    "block-influence",
    "angular",
    "sleb",
    "taylor",
    "ppl",
    "last",
    "random",
)
_PART = re.compile(r"^(?P<name>[^\[\]+]+)(?:\[(?P<options>[^\[\]]*)\])?$")


class CompareError(ShortLVLMError):
    """A comparison request is invalid, or its output folder holds a different comparison."""


@dataclass(frozen=True)
class MethodSpec:
    """One compared setting: a method (scorer or recipe) with a compensation, each with its options text."""

    label: str
    method: str
    compensation: str
    scorer_options: str = ""
    compensation_options: str = ""

    @property
    def scorer(self) -> str:
        return METHODS[self.method][0]

    @property
    def recorded_method(self) -> str:
        """The method name its plans record: the recipe a scorer and compensation make (tis-loss+lstsq)."""
        return recipe_name(self.method, self.compensation)

    @property
    def needs_calibration(self) -> bool:
        return compensation_needs_data(COMPENSATIONS.get(self.compensation)) or SCORERS[self.scorer].needs_data

    def make_scorer(self, seed: int) -> Scorer:
        """The scorer with this setting's options; `seed` goes to the scorers that have one (random)."""
        cls = SCORERS[self.scorer]
        fixed = {"seed": seed} if "seed" in {f.name for f in dataclasses.fields(cls)} else {}
        return options_from_text(cls, self.scorer_options, **fixed)

    def make_compensation(self) -> Compensation | None:
        """The compensation with this setting's options (None for none)."""
        if self.compensation == "none":
            return None
        return options_from_text(COMPENSATIONS[self.compensation], self.compensation_options)


def split_outside_brackets(text: str, separator: str) -> list[str]:
    """Split at the separators outside brackets: 'a[x=1,y=2],b' at ',' -> ['a[x=1,y=2]', 'b']."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == separator and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item.strip() for item in [*items, current]]


def _part(text: str, item: str) -> tuple[str, str]:
    match = _PART.match(text.strip())
    if match is None:
        raise CompareError(
            f"cannot read {item!r} in --methods: write METHOD[NAME=VALUE,...]+COMPENSATION[...], "
            "e.g. tis-loss+lstsq[ridge=0.1]"
        )
    return match["name"].strip(), (match["options"] or "").strip()


def parse_methods(text: str | list[str]) -> list[MethodSpec]:
    """'short-lvlm,block-influence+scp,tis-loss+lstsq[ridge=0.1]' -> specs; `+COMPENSATION` overrides the
    method's compensation; every option is checked here, before anything loads."""
    items = split_outside_brackets(text, ",") if isinstance(text, str) else list(text)
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise CompareError("--methods is empty; name at least one, e.g. short-lvlm,block-influence")
    specs = []
    for item in items:
        parts = split_outside_brackets(item, "+")
        if len(parts) > 2:
            raise CompareError(f"{item!r} in --methods names more than one compensation; give one after '+'")
        method, scorer_options = _part(parts[0], item)
        if method not in METHODS:
            raise CompareError(
                f"unknown method {method!r} in --methods; choose from: {', '.join(sorted(METHODS))}"
            )
        compensation, compensation_options = (
            _part(parts[1], item) if len(parts) == 2 else (METHODS[method][1], "")
        )
        if compensation not in COMPENSATION_NAMES:
            raise CompareError(
                f"unknown compensation {compensation!r} in {item!r}; use "
                f"{', '.join('+' + name for name in COMPENSATION_NAMES)}"
            )
        if compensation == "none" and compensation_options:
            raise CompareError(f"{item!r} gives options to no compensation; drop the brackets after +none")
        spec = MethodSpec(item, method, compensation, scorer_options, compensation_options)
        try:
            spec.make_scorer(0), spec.make_compensation()  # every option checked before anything loads
        except ShortLVLMError as err:
            raise CompareError(f"{item!r} in --methods: {err}") from None
        specs.append(spec)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise CompareError(f"--methods lists a setting twice: {labels}")
    by_scorer: dict[str, set[str]] = {}
    for spec in specs:
        by_scorer.setdefault(spec.scorer, set()).add(spec.scorer_options)
    mixed = sorted(name for name, settings in by_scorer.items() if len(settings) > 1)
    if mixed:
        raise CompareError(
            f"--methods gives {mixed[0]} two different scorer settings; one comparison ranks with one "
            "setting per scorer: compare the other in another --out"
        )
    return specs


def parse_ratios(text: str | list[float]) -> list[float]:
    """'0.1,0.2,0.3' -> [0.1, 0.2, 0.3], each strictly between 0 and 1, no repeats."""
    try:
        ratios = [float(t) for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    except ValueError as err:
        raise CompareError(f"--ratios takes comma-separated fractions such as 0.1,0.2,0.3 ({err})") from err
    bad = [r for r in ratios if not 0 < r < 1]
    if not ratios or bad:
        raise CompareError(f"--ratios must be fractions strictly between 0 and 1, got {text!r}")
    if len(set(ratios)) != len(ratios):
        raise CompareError(f"--ratios lists a ratio twice: {ratios}")
    return sorted(ratios)


@options
class CompareRequest(Options):
    """What a comparison compares (method settings x ratios), on which benchmark, and how it runs.

    `methods` and `ratios` take the flags' comma-separated text or a sequence (of labels or MethodSpecs,
    of fractions); either way they are checked here and kept as labels and sorted fractions.
    """

    error = CompareError

    methods: tuple[str, ...] = option(
        DEFAULT_METHODS, metavar="METHODS",
        help="comma-separated settings METHOD[OPTIONS]+COMPENSATION[OPTIONS]: append one of "
             f"{', '.join('+' + name for name in COMPENSATION_NAMES)} to override a method's compensation; "
             "bracketed NAME=VALUE lists set the scorer's and the compensation's options by their field names "
             "(as in `help(shortlvlm.LstSq)`), e.g. tis-loss[full_steps=2]+lstsq[ridge=0.1] (one scorer setting "
             "per scorer per comparison)")
    ratios: tuple[float, ...] = option((0.1, 0.2, 0.3), metavar="RATIOS", help="fractions of layers to remove")
    bench: str = option(NAMES[0], choices=NAMES, help="benchmark")
    data: str | None = option(None, help="the benchmark's folder (not needed for shapes)")
    limit: int | None = option(None, help=f"evaluate on the first N questions only (shapes: {shapes.LIMIT_HELP})")
    eval_batch_size: int = option(16, parse=positive_count, check=positive_int, help="generation batch size")
    seed: int = option(0, flag=None,
                       help="seed of the scorers that sample (random); the CLI's --seed")
    calib_draws: int = option(
        1, parse=positive_count, check=positive_int,
        help="run the comparison on N disjoint calibration draws and report each cell as mean ± sd (OUT/draw-K/ per "
             "draw, OUT/summary.md): a file's draws are consecutive slices of --num-samples (default: the file "
             "split in N); toy and smol-llava without --calib use the bundled set, then generated draws of as many "
             "samples")
    rank_per_ratio: bool = option(
        False, check=is_bool,
        help="rank tis-loss and laco (the scorers whose first layers depend on how many go) separately for every "
             "ratio, so each of their cells is what `prune --ratio R` gives; costs one search per ratio (without it "
             "they rank once, for the largest ratio, and smaller ratios take the first layers of that ranking). "
             "Other scorers rank once either way: their ranking for fewer layers is the start of the longer one "
             "(angular's plan holds one block per size)")
    overwrite: bool = option(False, check=is_bool, help="start over: discard what --out holds")

    def __post_init__(self) -> None:
        methods = self.methods
        if not isinstance(methods, str) and isinstance(methods, Sequence):
            methods = [m.label if isinstance(m, MethodSpec) else m for m in methods]
        object.__setattr__(self, "methods", tuple(spec.label for spec in parse_methods(methods)))
        object.__setattr__(self, "ratios", tuple(parse_ratios(self.ratios)))
        super().__post_init__()

    def method_specs(self) -> list[MethodSpec]:
        """The compared settings, in the order given."""
        return parse_methods(list(self.methods))

    @property
    def rankings(self) -> str:
        """How the count-dependent scorers rank, as results.json records it: 'once' or 'per-ratio'."""
        return "per-ratio" if self.rank_per_ratio else "once"
