"""Every command that writes: --out checked before any weights load, write failures as one line, one run per --out.

A read-only parent is simulated (tests may run as root); the full disk is real (`ulimit -f` in a
subprocess, which makes the kernel refuse the write with EFBIG).
"""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from shortlvlm.cli import main
from shortlvlm.io.output import OutputLock
from tests.io.faults import make_read_only

WRITERS = {
    "prune": lambda out: ["prune", "toy", "--layers", "3", "--out", str(out / "pruned")],
    "score": lambda out: ["score", "toy", "--method", "last", "--out", str(out / "plan.json")],
    "eval": lambda out: ["eval", "toy", "--bench", "shapes", "--limit", "2", "--out", str(out / "results.json")],
    "bench": lambda out: ["bench", "toy", "--rounds", "1", "--warmup", "0", "--out", str(out / "bench.json")],
    "compare": lambda out: ["compare", "toy", "--methods", "last", "--ratios", "0.1", "--limit", "2",
                            "--out", str(out / "cmp")],
    "demo": lambda out: ["demo", "--out", str(out / "demo")],
}


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_read_only_out_folder_is_refused_before_any_weights_load(command, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    make_read_only(monkeypatch, folder)
    code, err = run(WRITERS[command](folder / "sub"), capsys)
    assert code == 2
    assert "does not accept new files (Read-only file system)" in one_error_line(err)
    assert "Loading weights" not in err and "self-check" not in err
    assert list(folder.iterdir()) == []


def test_too_little_space_for_the_checkpoint_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    code, err = run(WRITERS["prune"](tmp_path), capsys)
    assert code == 2
    # toy without one of its 16 layers: 3,386,752 float32 parameters = 12.9 MiB
    assert "needs about 12.9 MiB and" in one_error_line(err) and "has 1.0 MiB free" in err
    assert "Loading weights" not in err and list(tmp_path.iterdir()) == []


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, resource.RLIM_INFINITY))  # 2 MiB per file


@pytest.mark.parametrize("command", ["prune", "score"])
def test_a_disk_that_fills_up_while_writing_gives_one_line_and_leaves_nothing(command, tmp_path):
    """ulimit -f: the kernel refuses the write (EFBIG) once a file passes 2 MiB, as a full disk would."""
    argv = WRITERS[command](tmp_path / "out")
    if command == "score":  # a plan is a few KiB: make its plot the file that does not fit
        argv = [*argv, "--num-samples", "4"]
        limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))  # noqa: E731
    else:
        limit = limit_file_size
    result = subprocess.run([sys.executable, "-m", "shortlvlm.cli", *argv], capture_output=True, text=True,
                            preexec_fn=limit, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "cannot write" in line and "File too large" in line and "ulimit -f" in line
    assert list(tmp_path.iterdir()) == []  # no temporary folder, no lock file, not even the parent


def test_a_full_disk_after_scoring_keeps_the_finished_stages_and_says_where(tmp_path):
    """Like an interruption, prune --ratio keeps its scored plan and SCP statistics for the rerun."""
    out = tmp_path / "out" / "pruned"
    result = subprocess.run([sys.executable, "-m", "shortlvlm.cli", "prune", "toy", "--method", "short-lvlm", "--ratio",
                             "0.2", "--num-samples", "4", "--out", str(out)], capture_output=True, text=True,
                            preexec_fn=limit_file_size,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "File too large" in line and f"stay in {out.parent / '.pruned.partial'} for the rerun" in line
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".pruned.partial"]  # no temporary checkpoint, no lock
    assert {p.name for p in (tmp_path / "out" / ".pruned.partial").iterdir()} >= {"plan.json", "scp.safetensors"}


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path, capsys):
    out = tmp_path / "pruned"
    first = OutputLock(out)
    first.acquire()  # a run in progress (flock: a second open file is refused even in one process)
    try:
        code, err = run(WRITERS["prune"](tmp_path), capsys)
    finally:
        first.release()
    assert code == 2
    assert f"another shortlvlm run (pid {os.getpid()}) is writing {out}" in one_error_line(err)
    assert "Loading weights" not in err and list(tmp_path.iterdir()) == []
    code, err = run([*WRITERS["prune"](tmp_path), "--no-verify"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]  # the lock file went with the run


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)])
def test_a_pruned_checkpoint_follows_the_umask(umask, folder_mode, file_mode, tmp_path, capsys):
    previous = os.umask(umask)
    try:
        code, err = run(["prune", "toy", "--layers", "3", "--no-verify", "--out", str(tmp_path / "a" / "pruned")],
                        capsys)
    finally:
        os.umask(previous)
    assert code == 0, err
    out = tmp_path / "a" / "pruned"
    assert stat.S_IMODE(out.parent.stat().st_mode) == folder_mode and stat.S_IMODE(out.stat().st_mode) == folder_mode
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert "model.safetensors" in files and files == dict.fromkeys(files, file_mode)


def test_the_safety_net_turns_an_unforeseen_full_disk_into_one_line(tmp_path, monkeypatch, capsys):
    """eval appends its answers as they come (a write no job wraps): a full disk there is still one line."""
    def full_disk(*args, resume, **kwargs):
        raise OSError(28, "No space left on device", str(resume.path))

    monkeypatch.setattr("shortlvlm.jobs.eval.evaluate", full_disk)
    code, err = run(WRITERS["eval"](tmp_path), capsys)
    assert code == 2
    assert "cannot write" in one_error_line(err) and ".results.json.partial.jsonl: No space left on device" in err
    assert list(Path(tmp_path).iterdir()) == []
