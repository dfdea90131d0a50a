"""Crash-safe file operations: whole-file replacement, atomic directory swaps, and repair after a kill."""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import sys
from pathlib import Path

# Sibling names used while saving `out`: .{out.name}.tmp-{pid}-{random} (the new checkpoint being
# written) and .{out.name}.old-{pid}-{random} (the previous one, moved aside for an instant).
TMP_TAG = ".tmp-"
OLD_TAG = ".old-"


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False  # filesystem or kernel without exchange: fall back to two renames
    raise OSError(error, f"cannot swap {a} and {b}: {os.strerror(error)}")


def move_aside(out: Path, backup: Path) -> None:
    """First of the two fallback renames (its own function so interruption tests can stop right after it)."""
    out.rename(backup)


def fsync_tree(root: Path) -> None:
    """Flush every file of a finished checkpoint to disk before it is renamed into place."""
    for path in [*root.rglob("*"), root]:
        if path.is_file() or path == root:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted_save(out: str | os.PathLike) -> list[str]:
    """Repair what a killed save of `out` left behind; returns what was done, one line each.

    A previous checkpoint moved aside (fallback path) is renamed back when `out` is missing;
    temporary and backup siblings of processes that no longer run are deleted.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    actions = []
    for tag in (OLD_TAG, TMP_TAG):
        for path in sorted(out.parent.glob(f".{glob.escape(out.name)}{tag}*")):
            pid_text = path.name[len(f".{out.name}{tag}"):].split("-", 1)[0]
            if not path.is_dir() or not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            if tag == OLD_TAG and not out.exists():
                path.rename(out)
                actions.append(f"restored {out} from {path.name}, left by an interrupted save")
            else:
                shutil.rmtree(path, ignore_errors=True)
                actions.append(f"removed {path.name}, left by an interrupted save")
    return actions


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write a temporary sibling, then rename: `path` holds either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


