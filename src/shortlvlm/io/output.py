"""Where a job writes: checked before any weights load, held against a second run, failures as one line.

`claim_output(out, ...)` is entered by every command that writes, after the checks that need no
weights and before the load: it proves the nearest existing folder of `out` accepts a new file,
compares its free space with what the job will write (when that is known), and takes an advisory
lock (`fcntl.flock` on `.{out.name}.lock` beside `out`), so a second run on the same `out` is
refused instead of silently replacing the first one's result. On leaving it removes the lock file
and the parent folders it created, if they are still empty.

`writing(path)` turns an operating-system failure while writing (a full disk, a quota, `ulimit
-f`, a read-only mount, a permission) into an `OutputWriteError` that names the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from shortlvlm.errors import OutputExistsError, OutputLockedError, OutputWriteError

LOCK_TAG = ".lock"
_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)


def lock_path_for(out: str | os.PathLike) -> Path:
    """The lock file of a job writing `out`: a hidden sibling."""
    out = Path(out)
    return out.with_name(f".{out.name}{LOCK_TAG}")


def os_error_of(err: BaseException) -> tuple[int | None, str]:
    """(errno, text) of an OSError, or of a safetensors error that wraps one ("... (os error 28)")."""
    if isinstance(err, OSError):
        return err.errno, err.strerror or str(err)
    found = re.search(r"os error (\d+)", str(err))
    if found:
        code = int(found.group(1))
        return code, os.strerror(code)
    return None, str(err)


def write_error(path: str | os.PathLike, err: BaseException) -> OutputWriteError:
    """The one line a user gets when writing `path` failed."""
    code, text = os_error_of(err)
    if code in _SPACE:
        fix = "free space there (or raise the file-size limit, ulimit -f) or choose another --out"
    elif code in _ACCESS:
        fix = "choose a folder you can write to for --out"
    else:
        fix = "check the disk and choose another --out if it persists"
    return OutputWriteError(f"cannot write {path}: {text}; {fix}")


def is_write_failure(err: BaseException) -> bool:
    """An OSError, or safetensors' error around one (it raises SafetensorError on a full disk)."""
    if isinstance(err, OSError):
        return True
    return type(err).__name__ == "SafetensorError" and os_error_of(err)[0] is not None


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Report an operating-system failure inside the block as an OutputWriteError naming `path`."""
    try:
        yield
    except OutputWriteError:
        raise
    except Exception as err:
        if is_write_failure(err):
            raise write_error(path, err) from err
        raise


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def probe_directory(directory: Path) -> None:
    """Create and remove an unnamed file in `directory`: the kernel's own answer to "can I write here?".

    os.access is no answer: root passes it on a read-only mount, and it ignores ACLs and quotas.
    """
    flags = getattr(os, "O_TMPFILE", 0)
    if flags:
        try:
            os.close(os.open(directory, flags | os.O_WRONLY, 0o600))
            return
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise  # EOPNOTSUPP/EISDIR/EINVAL: this filesystem has no O_TMPFILE; use a named file
    fd, name = _named_probe(directory)
    os.close(fd)
    os.unlink(name)


def _named_probe(directory: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=".shortlvlm-probe-", dir=directory)


def check_writable(out: str | os.PathLike, expected_bytes: int | None = None) -> None:
    """Refuse an `out` whose folder cannot take a new file, or lacks the space the job will need."""
    out = Path(out)
    folder = nearest_existing(out.parent)
    if not folder.is_dir():
        raise OutputWriteError(f"cannot write {out}: {folder} is not a folder; choose another --out")
    try:
        probe_directory(folder)
    except OSError as err:
        raise OutputWriteError(f"cannot write {out}: {folder} does not accept new files "
                               f"({err.strerror or err}); choose a folder you can write to for --out") from None
    if expected_bytes:
        free = shutil.disk_usage(folder).free
        if free < expected_bytes:
            raise OutputWriteError(
                f"not enough space for {out}: it needs about {gib(expected_bytes)} and {folder} has "
                f"{gib(free)} free; free space there or choose another --out")


def gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"


class OutputLock:
    """An exclusive, non-blocking flock on `out`'s lock file, held for the whole job."""

    def __init__(self, out: Path):
        self.out, self.path, self.fd = out, lock_path_for(out), None

    def acquire(self) -> None:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputLockedError(
                    f"another shortlvlm run (pid {holder}) is writing {self.out}; wait for it to finish or "
                    f"choose another --out (lock: {self.path})") from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have removed the file after we opened it: then our lock is on
            # a deleted file and a third run could lock a new one. Lock only the file the path names.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked, so no one else holds a lock on the unlinked file
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def claim_output(out: str | os.PathLike, *, overwrite: bool, expected_bytes: int | None = None,
                 resumable: bool = False) -> Iterator[Path]:
    """Check `out` can be written, lock it for this run, and check again (under the lock) that it is free.

    `resumable` outputs (a comparison folder) may exist without `overwrite`: the job resumes them.
    """
    out = Path(out)
    check_writable(out, expected_bytes)
    created = [p for p in reversed(out.parents) if not p.exists()]
    lock = OutputLock(out)
    try:
        with writing(out.parent):
            out.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        if out.exists() and not overwrite and not resumable:  # landed while we checked the rest
            raise OutputExistsError(f"output {out} already exists; pass --overwrite to replace it")
        yield out
    finally:
        lock.release()
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if still empty


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only swap it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(root: Path) -> None:
    """Give a folder we wrote the modes a plain mkdir and open would have (tempfile makes 0700/0600)."""
    mask = current_umask()
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
