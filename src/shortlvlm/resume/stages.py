"""Finished stages of a pruning job, kept beside the output until it lands (keys: shortlvlm.resume.keys).

A `prune --ratio` job has two expensive stages before the save: scoring (one or more capture
passes over the calibration set) and, for SCP, the gap statistics (one more pass). Each finished
stage is written to a hidden sibling of the output, `.{out}.partial/`, under a key that names
everything its result depends on (model config hash and dtype, the weights files through the
cache's `identity` (shortlvlm.io.fingerprint.weights_stamp), calibration hash, method and its parameters). The
same command run again after an interruption reuses the stages whose key matches and recomputes
the rest; the folder is deleted once the checkpoint has landed.

Only JSON and safetensors are read back (nothing executable); a file that does not parse or
whose key differs is ignored and recomputed, never trusted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.io.output import current_umask, writing
from shortlvlm.plan import Plan, PlanError

logger = logging.getLogger(__name__)


def partial_dir_for(out: str | os.PathLike) -> Path:
    """The hidden folder where a job writing `out` keeps its finished stages."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class StageCache:
    """Finished stages of one job: `plan` (a scored Plan) and named tensor sets (safetensors)."""

    def __init__(self, directory: str | os.PathLike, *, announce: bool = True, identity: dict | None = None):
        self.directory = Path(directory)
        self.announce = announce
        self.identity = dict(identity or {})  # added to every key, e.g. {"weights": weights_stamp(model)}
        self.reused: list[str] = []

    def _full_key(self, key: dict) -> str:
        return _canonical({**key, "_identity": self.identity} if self.identity else key)

    def _key_matches(self, name: str, key: dict) -> bool:
        try:
            stored = json.loads((self.directory / f"{name}.key.json").read_text())
        except (OSError, ValueError):
            return False
        return _canonical(stored) == self._full_key(key)

    def _note(self, name: str) -> None:
        self.reused.append(name)
        if self.announce:
            logger.info(f"resuming: reusing the {name} stage saved in {self.directory}")

    def _forget(self, name: str) -> None:
        """Drop a stage's key before its data is rewritten, so old key + new data never pair up."""
        (self.directory / f"{name}.key.json").unlink(missing_ok=True)

    def load_plan(self, key: dict) -> Plan | None:
        """The plan saved under this key, or None (missing, torn, or made for other inputs)."""
        if not self._key_matches("plan", key):
            return None
        try:
            plan = Plan.load(self.directory / "plan.json")
        except PlanError:
            return None
        self._note("plan")
        return plan

    def save_plan(self, key: dict, plan: Plan) -> None:
        self._forget("plan")
        write_text_atomically(self.directory / "plan.json", json.dumps(plan.to_dict(), indent=2) + "\n")
        write_text_atomically(self.directory / "plan.key.json", self._full_key(key))

    def load_tensors(self, name: str, key: dict) -> dict[str, torch.Tensor] | None:
        """The tensors saved under this name and key, or None."""
        if not self._key_matches(name, key):
            return None
        try:
            tensors = load_file(self.directory / f"{name}.safetensors")
        except (OSError, SafetensorError, ValueError):
            return None
        self._note(name)
        return tensors

    def save_tensors(self, name: str, key: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._forget(name)
        path = self.directory / f"{name}.safetensors"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with writing(path):
                save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
                tmp.chmod(0o666 & ~current_umask())  # safetensors creates its files 0600
                tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        # The key goes last: a kill before it leaves an unkeyed file, which is never reused.
        write_text_atomically(self.directory / f"{name}.key.json", self._full_key(key))

    def plan(self, key: dict, compute: Callable[[], Plan]) -> Plan:
        """The plan saved under `key`, else `compute()`, saved as soon as it is made."""
        plan = self.load_plan(key)
        if plan is None:
            plan = compute()
            self.save_plan(key, plan)
        return plan

    def tensors(self, name: str, key: dict, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The tensors saved under `name` and `key`, else `compute()`, saved as soon as they are made."""
        tensors = self.load_tensors(name, key)
        if tensors is None:
            tensors = compute()
            self.save_tensors(name, key, tensors)
        return tensors

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
