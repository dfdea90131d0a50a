"""The pruning plan: which layers go, why, and how; saved as pruning_plan.json beside a checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from shortlvlm.errors import ShortLVLMError

PLAN_FILENAME = "pruning_plan.json"


class PlanError(ShortLVLMError):
    """A plan file is missing, malformed, or made for another model."""


@dataclass
class Plan:
    """Everything needed to reproduce a pruning decision (DESIGN §6)."""

    method: str
    num_layers_before: int
    removed_layers: list[int]
    compensation: str = "none"
    ratio: float | None = None
    layer_scores: list[float] | None = None
    params: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        if not self.version:
            from shortlvlm import __version__

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
        unknown = sorted(set(data) - names)
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
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise PlanError(f"cannot read pruning plan {path}: {err.strerror}") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlanError(f"{path} is not valid JSON (line {err.lineno}): {err.msg}") from err
        return cls.from_dict(data)
