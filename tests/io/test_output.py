"""Checks before writing (writable folder, free space), the lock on --out, the exists-check at the swap, the umask."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from safetensors import SafetensorError

from shortlvlm import save
from shortlvlm.errors import OutputExistsError, OutputLockedError, OutputWriteError
from shortlvlm.io import output
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.io.output import OutputLock, check_writable, claim_output, lock_path_for, writing
from shortlvlm.plan import Plan
from shortlvlm.testbeds.tiny import tiny_model
from tests.io.faults import IS_ROOT, make_read_only


def test_a_folder_that_takes_no_new_file_is_refused_with_the_fix(tmp_path, monkeypatch):
    make_read_only(monkeypatch, tmp_path)
    message = r"does not accept new files \(Read-only file system\); choose a folder you can write to"
    with pytest.raises(OutputWriteError, match=message):
        check_writable(tmp_path / "a" / "b" / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(IS_ROOT, reason="root writes into a 0555 folder; the simulated read-only case covers root")
def test_a_real_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputWriteError, match="Permission denied"):
            check_writable(folder / "out")
    finally:
        folder.chmod(0o755)


def test_a_writable_folder_passes_and_keeps_no_probe_file(tmp_path):
    check_writable(tmp_path / "new" / "out", expected_bytes=1)
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 2**29, 2**29))
    with pytest.raises(OutputWriteError, match=r"needs about 1\.00 GiB and .* has 0\.50 GiB free"):
        check_writable(tmp_path / "out", expected_bytes=2**30)
    check_writable(tmp_path / "out", expected_bytes=2**28)  # fits


def test_writing_turns_a_full_disk_into_one_line_with_the_fix(tmp_path):
    failures = [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), r"cannot write .*out: No space left on device; free space"),
        # how safetensors reports a write the kernel refused
        (SafetensorError("Error while serializing: I/O error: File too large (os error 27)"),
         r"File too large.*ulimit -f"),
    ]
    for failure, message in failures:
        with pytest.raises(OutputWriteError, match=message), writing(tmp_path / "out"):
            raise failure
    with pytest.raises(ValueError), writing(tmp_path / "out"):  # not a write failure: left alone
        raise ValueError("a bug")


def test_a_second_lock_on_the_same_out_is_refused_and_released_after(tmp_path):
    out = tmp_path / "out"
    first = OutputLock(out)
    first.acquire()
    try:
        with pytest.raises(OutputLockedError, match=rf"another shortlvlm run \(pid {os.getpid()}\) is writing"):
            OutputLock(out).acquire()  # flock is per open file: a second open is refused even in one process
        OutputLock(tmp_path / "other").acquire()  # another --out is free
    finally:
        first.release()
    assert not lock_path_for(out).exists()
    second = OutputLock(out)
    second.acquire()
    second.release()


def test_a_lock_held_by_another_process_refuses_this_one(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from shortlvlm.io.output import OutputLock;"
         " lock = OutputLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match=rf"pid {holder.pid}"), claim_output(out, overwrite=False):
            pass
    finally:
        holder.kill()
        holder.wait()
    with claim_output(out, overwrite=False):  # the kernel dropped the dead holder's lock
        assert lock_path_for(out).exists()
    assert not lock_path_for(out).exists()


def test_claim_removes_the_folders_it_made_and_rechecks_existence_under_the_lock(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), claim_output(out, overwrite=False):
        assert out.parent.is_dir()
        raise RuntimeError("the job failed")
    assert list(tmp_path.iterdir()) == []
    out.mkdir(parents=True)  # landed between the job's first check and the lock
    with pytest.raises(OutputExistsError, match="--overwrite"), claim_output(out, overwrite=False):
        pass
    with claim_output(out, overwrite=False, resumable=True):
        pass


def test_a_file_that_appears_before_the_rename_is_kept(tmp_path, monkeypatch):
    path = tmp_path / "plan.json"
    real_write = Path.write_text

    def write_then_race(self, text, *args, **kwargs):
        result = real_write(self, text, *args, **kwargs)
        real_write(path, "theirs")  # another program writes the same file meanwhile
        return result

    monkeypatch.setattr(Path, "write_text", write_then_race)
    with pytest.raises(OutputExistsError, match="appeared while this run was writing"):
        write_text_atomically(path, "ours", overwrite=False)
    monkeypatch.undo()
    assert path.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["plan.json"]
    write_text_atomically(path, "ours")  # with overwrite (the default) it is replaced
    assert path.read_text() == "ours"


def test_a_failing_text_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full_disk(self, text, *args, **kwargs):
        Path.write_bytes(self, b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OutputWriteError, match="No space left"):
        write_text_atomically(tmp_path / "r.json", "{}")
    assert list(tmp_path.iterdir()) == []


def saved_checkpoint(tmp_path: Path, name: str = "pruned", **kwargs) -> Path:
    model = tiny_model("llava", 3)
    return save(model, None, Plan(method="manual", num_layers_before=3, removed_layers=[]), tmp_path / name, **kwargs)


def test_a_checkpoint_that_appears_during_the_save_is_kept(tmp_path):
    out = tmp_path / "pruned"

    def someone_else_lands(tmp: Path) -> None:
        out.mkdir()
        (out / "theirs.txt").write_text("keep")

    with pytest.raises(OutputExistsError, match="appeared while this run was writing"):
        saved_checkpoint(tmp_path, check=someone_else_lands)
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"] and [p.name for p in out.iterdir()] == ["theirs.txt"]


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)])
def test_a_checkpoint_follows_the_umask(tmp_path, umask, folder_mode, file_mode):
    previous = os.umask(umask)
    try:
        assert output.current_umask() == umask
        out = saved_checkpoint(tmp_path / "nested")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == folder_mode
    assert stat.S_IMODE(out.parent.stat().st_mode) == folder_mode
    files = [p for p in out.iterdir() if p.is_file()]
    assert "model.safetensors" in {p.name for p in files}  # the file safetensors writes 0600 by itself
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: file_mode for p in files}


def test_a_full_disk_during_the_save_leaves_nothing(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", full_disk)
    with pytest.raises(OutputWriteError, match=r"cannot write .*pruned: No space left on device"):
        saved_checkpoint(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
