"""The results file of one comparison (results.json): created, or resumed if its configuration matches."""

from __future__ import annotations

import json
from pathlib import Path

from shortlvlm.errors import ShortLVLMError
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.io.save import out_is_a_file
from shortlvlm.jobs.compare_report import ratio_key
from shortlvlm.jobs.compare_spec import CompareError, MethodSpec
from shortlvlm.plan import Plan
from shortlvlm.scoring import Scorer, scorer_from_dict

RESULTS = "results.json"


# Options that change how a ranking is computed, not the ranking (tis-loss: the same losses either way).
NOT_RANKING = ("recompute",)


def same_options(recorded: dict, scorer: Scorer) -> bool:
    """Whether a plan's recorded scorer options are `scorer`'s. An option missing from the record was added after
    the plan was made: it holds the value the plan was made with (`Scorer.recorded_before`, e.g. tis-loss's
    `bridge` off), else its default."""
    current = {"name": scorer.name, **scorer.to_dict()}
    filled = {"name": scorer.name, **type(scorer)().to_dict(), **type(scorer).recorded_before, **recorded}
    return ({k: v for k, v in filled.items() if k not in NOT_RANKING}
            == {k: v for k, v in current.items() if k not in NOT_RANKING})


def write_json(path: Path, data: dict) -> None:
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


# What a comparison measures: the methods and ratios compared are its scope, which may grow on a rerun.
SCOPE = ("methods", "ratios")

# Settings added to the configuration after comparisons were stored, with the value those comparisons had.
CONFIG_BEFORE = {"rankings": "once"}


class Comparison:
    """Scores, the unpruned result and every finished cell, saved after each step (atomically).

    A folder holds one comparison: one model and weights, benchmark, question count, seed and
    calibration set. Rerunning with more methods or ratios extends it (finished cells, scores and the
    unpruned result are kept); any other difference is refused unless `overwrite`, which starts over.
    """

    def __init__(self, out: Path, config: dict, *, overwrite: bool):
        self.out, self.path = out, out / RESULTS
        if out.exists() and not out.is_dir():
            raise out_is_a_file(out)
        existing = json.loads(self.path.read_text()) if self.path.exists() else None
        old = {**CONFIG_BEFORE, **existing.get("config", {})} if existing is not None else {}
        changed = sorted(k for k in config if k not in SCOPE and old.get(k) != config[k])
        if existing is not None and changed and not overwrite:
            raise CompareError(
                f"{out} holds a comparison with different settings ({', '.join(changed)}); "
                "resume it with the same arguments, choose another --out, or pass --overwrite to start over"
            )
        if existing is None or changed or overwrite:  # --overwrite starts over, also with the same settings
            existing = {"config": config, "scoring": {}, "unpruned": None, "cells": {}}
            for plan in (out / "plans").glob("*.json") if overwrite else ():
                plan.unlink()
        else:  # the same comparison, maybe with more methods or ratios: the union, earlier ones first
            union = {key: list(dict.fromkeys([*old.get(key, []), *config[key]])) for key in SCOPE}
            existing["config"] = {**config, **union}
        self.data = existing
        (out / "plans").mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)

    def plan_path(self, label: str, ratio: float | None = None) -> Path:
        """Where a compared method's plan is kept (older folders kept one per scorer); with `ratio`, the plan
        ranked for that ratio alone (`--rank-per-ratio`): plans/LABEL@RATIO.json."""
        return self.out / "plans" / (f"{label}.json" if ratio is None else f"{label}@{ratio_key(ratio)}.json")

    def scored_plan(self, scorer: Scorer, specs: list[MethodSpec], ratio: float | None = None) -> Plan | None:
        """The ranking `scorer` already made here (for `ratio` alone, if given): any of its methods' plans, or the
        older per-scorer file, scored with the same options (a plan from a version with other defaults is not
        reused)."""
        paths = [self.plan_path(s.label, ratio) for s in specs]
        for path in paths if ratio is not None else [*paths, self.plan_path(scorer.name)]:
            if path.exists():
                try:
                    plan = Plan.load(path)
                    recorded = scorer_from_dict(plan.scorer)
                except ShortLVLMError:  # unreadable, or options this version does not know: not this ranking
                    continue
                if recorded.name == scorer.name and same_options(plan.scorer, scorer):
                    return plan
        return None

    def cell(self, label: str, ratio: float) -> dict | None:
        return self.data["cells"].get(label, {}).get(ratio_key(ratio))

    def set_cell(self, label: str, ratio: float, row: dict) -> None:
        self.data["cells"].setdefault(label, {})[ratio_key(ratio)] = row
        self.save()
