"""Crash-safe file operations: whole-file replacement, atomic directory swaps, and repair after a kill."""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import sys
from pathlib import Path

from shortlvlm.errors import OutputExistsError
from shortlvlm.io.output import writing

# Sibling names used while saving `out`: .{out.name}.tmp-{pid}-{random} (the new checkpoint being
# written) and .{out.name}.old-{pid}-{random} (the previous one, moved aside for an instant).
TMP_TAG = ".tmp-"
OLD_TAG = ".old-"
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def _renameat2(a: Path, b: Path, flags: int) -> bool:
    """Linux renameat2(a, b, flags); False where the kernel or filesystem lacks it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flags) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False  # filesystem or kernel without this flag: the caller falls back
    raise OSError(error, f"cannot rename {a} to {b}: {os.strerror(error)}", str(b))


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    return _renameat2(a, b, RENAME_EXCHANGE)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` unless `dst` exists (FileExistsError): the exists-check made at the swap itself.

    Atomic with renameat2 RENAME_NOREPLACE, or a hard link for files; elsewhere a folder is checked
    just before the rename.
    """
    if _renameat2(src, dst, RENAME_NOREPLACE):
        return
    if src.is_dir():
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
        src.rename(dst)
    else:
        os.link(src, dst)  # fails with FileExistsError if dst appeared
        src.unlink()


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


def write_text_atomically(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> None:
    """Write a temporary sibling, then rename: `path` holds either the old file or the complete new one.

    Without `overwrite`, a file that appeared at `path` meanwhile is kept (OutputExistsError). A
    failing write (full disk, permissions) leaves no temporary file and raises OutputWriteError.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            if overwrite:
                tmp.replace(path)
            else:
                try:
                    rename_noreplace(tmp, path)
                except FileExistsError:
                    raise OutputExistsError(f"{path} appeared while this run was writing it (another program "
                                            "wrote it); pass --overwrite to replace it") from None
    finally:
        tmp.unlink(missing_ok=True)
