"""What a comparison compares: method settings (`short-lvlm`, `block-influence+scp`, ...) and ratios."""

from __future__ import annotations

from dataclasses import dataclass

from shortlvlm.errors import ShortLVLMError
from shortlvlm.methods import COMPENSATIONS, METHODS
from shortlvlm.scoring import SCORERS

DEFAULT_METHODS = ("short-lvlm", "tis-cosine", "tis-loss", "block-influence", "angular", "sleb", "taylor", "ppl",
                   "last", "random")


class CompareError(ShortLVLMError):
    """A comparison request is invalid, or its output folder holds a different comparison."""


@dataclass(frozen=True)
class MethodSpec:
    """One compared setting: a method (scorer or recipe) with a compensation."""

    label: str
    method: str
    compensation: str

    @property
    def scorer(self) -> str:
        return METHODS[self.method][0]

    @property
    def needs_calibration(self) -> bool:
        return self.compensation == "scp" or SCORERS[self.scorer].needs_data


def parse_methods(text: str | list[str]) -> list[MethodSpec]:
    """'short-lvlm,block-influence+scp,sleb' -> specs; `+none`/`+scp` overrides the compensation."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise CompareError("--methods is empty; name at least one, e.g. short-lvlm,block-influence")
    specs = []
    for item in items:
        method, _, compensation = item.partition("+")
        if method not in METHODS:
            raise CompareError(f"unknown method {method!r} in --methods; choose from: {', '.join(sorted(METHODS))}")
        compensation = compensation or METHODS[method][1]
        if compensation not in COMPENSATIONS:
            raise CompareError(f"unknown compensation {compensation!r} in {item!r}; use +none or +scp")
        specs.append(MethodSpec(item, method, compensation))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise CompareError(f"--methods lists a setting twice: {labels}")
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
