"""Atomic file and directory writes: a reader never sees a half-written output.

Temporaries are hidden siblings named ``.NAME.PID-XXXXXXXX.tmp[SUFFIX]`` (PID: the writing
process). A process killed mid-write (SIGKILL, power loss) leaves one behind; the next write of
``NAME``, and ``remove_orphans`` on its folder, delete those whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


class DiskFullError(OSError, ValueError):
    """No space left on the disk being written; the message (one line) names the folder and its disk.

    An ``OSError`` (``errno.ENOSPC``) for code that handles I/O errors, and a ``ValueError`` for the
    command line, which reports those in one line.
    """

    def __str__(self) -> str:
        return str(self.strerror)


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "os error 28")
# torch.save's zip writer reports a short write without an errno: "unexpected pos N vs M".
_SHORT_WRITE_WORDS = ("unexpected pos", "iostream error")
NEARLY_FULL = 64 * 2**20  # bytes: with a short write and less than this free, the disk is taken as full


def _existing(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _mount_point(folder: Path) -> Path:
    folder = _existing(folder)
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def is_disk_full(error: BaseException, folder: str | Path) -> bool:
    """Whether ``error`` (or an error it was raised from) says the disk of ``folder`` is full."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 16:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in chain:
        if isinstance(item, OSError) and item.errno in _FULL_ERRNOS:
            return True
        if any(word in str(item) for word in _FULL_WORDS):
            return True
    if any(word in str(item) for item in chain for word in _SHORT_WRITE_WORDS):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(_existing(Path(folder))).free < NEARLY_FULL
    return False


def format_bytes(nbytes: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, B to TB)."""
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def disk_full_error(folder: str | Path, what: str, advice: str = "free some space and run again") -> DiskFullError:
    """The one-line error for a full disk while writing ``what`` into ``folder``."""
    folder = Path(os.path.abspath(folder))
    try:
        usage = shutil.disk_usage(_existing(folder))
        space = f"{format_bytes(usage.free)} free of {format_bytes(usage.total)}"
    except OSError:
        space = "free space unknown"
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on the disk of {folder} (mounted at {_mount_point(folder)}, {space}) while writing "
        f"{what}; {advice}",
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_tree(folder: Path) -> None:
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if stat.S_IMODE(os.stat(path).st_mode) == 0o600:
                os.chmod(path, 0o666 & ~mask)


# .NAME.[PID-]XXXXXXXX.tmp[SUFFIX] (files) / .NAME.[PID-]XXXXXXXX.tmp (folders) / .NAME.old-PID (folders)
_TEMPORARY = re.compile(
    r"^\.(?P<name>.+?)\.(?:(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp.*|old-(?P<old_pid>\d+))$", re.IGNORECASE
)
LEGACY_AGE = 3600.0  # seconds: temporaries of older versions (no PID in the name) older than this are orphans


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (ours counts; another user's too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to someone else
        return True
    return True


def remove_orphans(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete temporaries of our own naming in ``folder`` (for ``name`` only, if given) whose writing
    process no longer runs; returns what was removed. Temporaries without a PID (older versions) go
    only for a given ``name`` and when older than ``LEGACY_AGE``. Errors (a read-only folder) are ignored."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        pid = match["pid"] or match["old_pid"]
        try:
            if pid is not None:
                orphan = not process_alive(int(pid))
            else:  # older naming without a PID: only for a named target, and only when old
                orphan = name is not None and now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_AGE
            if not orphan:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it is renamed onto ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false (checked before and after writing).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent, path.name)
    prefix = f".{path.name}.{os.getpid()}-"
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} appeared while writing; not replaced")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` as a whole.

    An existing non-empty ``path`` is refused unless ``overwrite``; it is then moved aside and
    deleted only after the new folder is in place.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _chmod_tree(tmp)  # mkdtemp creates 0700; give the folder the usual permissions
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
