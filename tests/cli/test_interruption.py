"""Killing `shortlvlm prune` at any point leaves --out holding the previous or the complete new checkpoint.

Each case runs the real CLI in a subprocess whose driver wraps one internal function so that the
process sends itself a signal right after that function returns: a deterministic "kill here".
The same command is then run again, and must resume from the stages the killed run finished,
land the new checkpoint and leave no temporary siblings behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shortlvlm.cli import main
from shortlvlm.plan import PLAN_FILENAME

DRIVER = r"""
import importlib, os, signal, sys
target, signame, no_exchange, argv = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
module_name, attr = target.split(":")
owner = importlib.import_module(module_name)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)
def stop_after(*args, **kwargs):
    result = original(*args, **kwargs)
    os.kill(os.getpid(), getattr(signal, signame))
    return result
setattr(owner, name, stop_after)
# A shell starts background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt;
# a terminal's Ctrl-C, which this simulates, always has the default handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
if no_exchange:  # a filesystem without renameat2 RENAME_EXCHANGE: the two-rename fallback
    import shortlvlm.io.atomic
    shortlvlm.io.atomic.exchange_paths = lambda a, b: False
from shortlvlm.cli import main
sys.exit(main(argv))
"""

RATIO_ARGS = ["--method", "short-lvlm", "--ratio", "0.25", "--num-samples", "8", "--overwrite"]  # scoring + SCP + save


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A finished checkpoint (toy with layer 3 removed) that the interrupted run is replacing."""
    out = tmp_path_factory.mktemp("previous") / "out"
    assert main(["prune", "toy", "--layers", "3", "--out", str(out)]) == 0
    return out, snapshot(out)


def state_of(out: Path, previous_files: dict[str, str]) -> str:
    """'previous' or 'new' (complete: every file, 4 layers removed); anything else fails the test."""
    assert out.is_dir(), f"{out} is missing"
    files = snapshot(out)
    if files == previous_files:
        return "previous"
    assert set(files) == set(previous_files), f"partial checkpoint: {sorted(set(previous_files) ^ set(files))}"
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert len(plan["removed_layers"]) == 4 and plan["method"] == "short-lvlm"
    return "new"


def run_killed(target: str, signame: str, out: Path, *, no_exchange: bool = False) -> subprocess.CompletedProcess:
    argv = ["prune", "toy", *RATIO_ARGS, "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", DRIVER, target, signame, "1" if no_exchange else "0", *argv],
                          capture_output=True, text=True, timeout=300, env=env)


# (where the run is stopped, signal, two-rename fallback?, what --out must hold, stages the rerun reuses)
CASES = [
    ("shortlvlm.resume:StageCache.save_plan", "SIGKILL", False, "previous", {"plan"}),
    ("shortlvlm.resume:StageCache.save_tensors", "SIGKILL", False, "previous", {"plan", "scp"}),
    ("shortlvlm.io.atomic:fsync_tree", "SIGKILL", False, "previous", {"plan", "scp"}),
    ("shortlvlm.jobs.checkpoint:verify", "SIGKILL", False, "previous", {"plan", "scp"}),
    ("shortlvlm.io.atomic:exchange_paths", "SIGKILL", False, "new", {"plan", "scp"}),
    ("shortlvlm.io.atomic:move_aside", "SIGKILL", True, "missing", {"plan", "scp"}),
    ("shortlvlm.resume:StageCache.save_plan", "SIGINT", False, "previous", {"plan"}),
    ("shortlvlm.io.atomic:fsync_tree", "SIGINT", False, "previous", {"plan", "scp"}),
    ("shortlvlm.jobs.checkpoint:verify", "SIGTERM", False, "previous", {"plan", "scp"}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "signame", "no_exchange", "expected", "reused"), CASES,
                         ids=[f"{c[1]}-after-{c[0].split(':')[1]}{'-fallback' if c[2] else ''}" for c in CASES])
def test_killed_prune_leaves_old_or_new_and_the_rerun_resumes(previous, tmp_path, capsys, target, signame,
                                                              no_exchange, expected, reused):
    previous_dir, previous_files = previous
    out = tmp_path / "out"
    shutil.copytree(previous_dir, out)
    killed = run_killed(target, signame, out, no_exchange=no_exchange)
    if signame == "SIGKILL":
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    else:  # Ctrl-C and SIGTERM unwind: cleanup runs and the CLI says what happened
        assert killed.returncode == 130, killed.stderr[-2000:]
        assert "interrupted; the output location was left as it was" in killed.stderr
        assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    if expected == "missing":
        # Killed between the two fallback renames: the old checkpoint sits aside until the next run.
        assert not out.exists()
        assert [p.name.split("-")[0] for p in tmp_path.iterdir() if ".old-" in p.name] == [".out.old"]
    else:
        assert state_of(out, previous_files) == expected

    code = main(["prune", "toy", *RATIO_ARGS, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert state_of(out, previous_files) == "new"
    assert {stage for stage in ("plan", "scp") if f"reusing the {stage} stage" in err} == reused
    if expected == "missing":
        assert "restored" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .tmp-, .old- or .partial left


def test_a_torn_or_foreign_stage_is_recomputed_not_trusted(tmp_path, capsys):
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / "plan.json").write_text('{"method": "short-lvlm", "num_layers_bef')  # torn
    (partial / "plan.key.json").write_text("{}")  # a key no job has
    (partial / "scp.safetensors").write_bytes(b"\x00" * 64)
    assert main(["prune", "toy", "--method", "short-lvlm", "--ratio", "0.25", "--num-samples", "8", "--out",
                 str(out)]) == 0
    assert "reusing" not in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_fresh_discards_saved_stages(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["prune", "toy", "--method", "short-lvlm", "--ratio", "0.25", "--num-samples", "8", "--out", str(out)]
    from shortlvlm.resume import StageCache, partial_dir_for

    original = StageCache.clear
    StageCache.clear = lambda self: None  # keep the stages as if the run had been killed after them
    try:
        assert main(args) == 0
    finally:
        StageCache.clear = original
    assert partial_dir_for(out).is_dir()
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 0
    assert "reusing the plan stage" in capsys.readouterr().err
    StageCache.clear = lambda self: None
    try:
        assert main([*args, "--overwrite"]) == 0
    finally:
        StageCache.clear = original
    assert main([*args, "--overwrite", "--fresh"]) == 0
    assert "reusing" not in capsys.readouterr().err
