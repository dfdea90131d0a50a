"""The pruning plan: which layers go, why, and how; saved as pruning_plan.json beside a checkpoint.

Format 2 stores each options object as one sub-dict under its own field names: `scorer` (the
scorer's options plus its `name`), `compensation_options` (the options of whichever compensation
`compensation` names, scp, lstsq or magnitude; null without), `scp` (SCP's options again, as format 2
first wrote them) and `calibration` (the calibration options, with the count of samples used and their hash).
`params` holds what scoring and compensation found. Plans written before (format 1, flat
`params`) are converted on reading (shortlvlm.plan_v1).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shortlvlm.errors import ShortLVLMError
from shortlvlm.jsontext import loads_json
from shortlvlm.plan_v1 import upgrade
from shortlvlm.version import __version__

PLAN_FILENAME = "pruning_plan.json"
FORMAT = 2
MAX_NESTING = 100  # levels of nested lists/objects a plan may hold (real plans use fewer than 5)
_FIELD_TYPES = (  # (field, the types it accepts, what the error asks for)
    ("method", (str,), "a string"),
    ("compensation", (str,), "a string"),
    ("ratio", (int, float, type(None)), "a number or null"),
    ("layer_scores", (list, type(None)), "a list of numbers or null"),
    ("scorer", (dict,), "an object"),
    ("scp", (dict, type(None)), "an object or null"),
    ("compensation_options", (dict, type(None)), "an object or null"),
    ("params", (dict,), "an object"),
    ("calibration", (dict,), "an object"),
    ("model", (dict,), "an object"),
    ("version", (str,), "a string"),
    ("format", (int,), "an integer"),
)


class PlanError(ShortLVLMError):
    """A plan file is missing, malformed, or made for another model."""


@dataclass
class Plan:
    """Everything needed to reproduce a pruning decision (docs/design.md §5)."""

    method: str
    num_layers_before: int
    removed_layers: list[int]
    compensation: str = "none"
    ratio: float | None = None
    layer_scores: list[float] | None = None
    scorer: dict = field(default_factory=dict)  # the scorer's options: {"name": ..., field: value, ...}
    scp: dict | None = None  # SCP's options when compensation is "scp" (kept for readers of format 2)
    compensation_options: dict | None = None  # the compensation's options (any kind), null without one
    params: dict = field(default_factory=dict)  # what scoring and compensation found (removal order, report)
    calibration: dict = field(default_factory=dict)  # the calibration options, num_samples used, hash
    model: dict = field(default_factory=dict)
    version: str = ""
    format: int = FORMAT

    def __post_init__(self) -> None:
        if not self.version:
            self.version = __version__
        if self.ratio is None and self.num_layers_before:
            self.ratio = len(self.removed_layers) / self.num_layers_before

    @property
    def kept_layers(self) -> list[int]:
        """Original indices of the layers that remain, in order."""
        removed = set(self.removed_layers)
        return [i for i in range(self.num_layers_before) if i not in removed]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: object) -> Plan:
        """Build a plan from parsed JSON, with a clear error for anything malformed."""
        if not isinstance(data, dict):
            raise PlanError("a pruning plan must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("method", "num_layers_before", "removed_layers") if n not in data]
        if missing:
            raise PlanError(f"pruning plan lacks required field(s): {', '.join(missing)}")
        unknown = sorted(str(name) for name in data if name not in names)
        if unknown:
            raise PlanError(f"pruning plan has unknown field(s): {', '.join(unknown)}")
        num = data["num_layers_before"]
        removed = data["removed_layers"]
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise PlanError("num_layers_before must be a positive integer")
        if not isinstance(removed, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num for i in removed
        ):
            raise PlanError(f"removed_layers must be a list of layer indices in 0..{num - 1}")
        repeated = sorted(i for i, n in Counter(removed).items() if n > 1)
        if repeated:
            raise PlanError(f"removed_layers lists layer(s) {repeated} more than once; list each layer once")
        for name, kinds, expected in _FIELD_TYPES:
            if name in data and not _is_instance(data[name], kinds):
                raise PlanError(f"pruning plan field {name!r} must be {expected}, got "
                                f"{type(data[name]).__name__}; fix or remove it (write plans with `shortlvlm score`)")
        scores = data.get("layer_scores")
        if scores is not None and not all(_is_instance(s, (int, float)) for s in scores):
            raise PlanError("pruning plan field 'layer_scores' must be a list of numbers (one score per layer); "
                            "fix or remove it")
        if _nested_deeper_than(data, MAX_NESTING):
            raise PlanError(f"pruning plan is nested more than {MAX_NESTING} levels deep; "
                            "write plans with `shortlvlm score`")
        if data.get("format", 1) > FORMAT:
            raise PlanError(f"pruning plan has format {data['format']}, newer than this shortlvlm reads "
                            f"({FORMAT}); upgrade shortlvlm")
        return cls(**upgrade(data))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        try:
            raw = Path(path).read_bytes()
        except OSError as err:
            raise PlanError(f"cannot read pruning plan {path}: {err.strerror}") from err
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PlanError(f"{path} is not UTF-8 text ({err.reason}); save the plan as UTF-8 JSON") from None
        try:
            data = loads_json(text)
        except json.JSONDecodeError as err:
            raise PlanError(f"{path} is not valid JSON (line {err.lineno}): {err.msg}") from None
        return cls.from_dict(data)


def _is_instance(value: object, kinds: tuple[type, ...]) -> bool:
    """isinstance(value, kinds), except that a bool is never a number."""
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def _nested_deeper_than(value: object, limit: int) -> bool:
    """Whether `value` holds lists/objects more than `limit` levels deep (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth >= limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False
