"""File-system faults the tests need and cannot cause for real when they run as root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def make_read_only(monkeypatch, folder: Path) -> None:
    """What the kernel answers for a folder on a read-only mount: creating anything in it fails (EROFS).

    Simulated by wrapping os.open and os.mkdir, because tests may run as root, whom chmod does not stop.
    """
    folder = Path(os.path.abspath(folder))
    real_open, real_mkdir = os.open, os.mkdir

    def inside(path) -> bool:
        return Path(os.path.abspath(os.fsdecode(path))).is_relative_to(folder)

    def guarded_open(path, flags, *args, **kwargs):
        tmpfile = getattr(os, "O_TMPFILE", -1)
        creates = flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) or flags & tmpfile == tmpfile
        if creates and inside(path) and kwargs.get("dir_fd") is None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
