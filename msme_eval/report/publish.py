"""Atomic publishing of a cycle folder and the per-cycle lock.

A cycle is built in ``<root>/.tmp-<cycle>.<random>/`` and `publish` moves it to
``<root>/<cycle>`` in one step, so a crash never leaves a half report that looks complete, and
no other folder under the root is touched (cycle ids cannot hold a '.', so the build folders of
cycles ``F`` and ``F-x`` never match each other's pattern).

Where the file system cannot exchange two folders atomically (vfat USB sticks, some network
drives), the previous cycle is first renamed to ``.old-<cycle>.<random>``; if the run dies before
the new folder is in place, `restore_interrupted_publish` (called at the next run's start, under
the lock) puts the previous cycle back.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

from msme_eval.report.params import CycleError


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    res = fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def publish(build: Path, target: Path) -> None:
    """Move a complete build folder to ``target``, replacing an existing cycle atomically.

    With an existing target the two folders are exchanged in one system call where the OS
    supports it, otherwise the old folder is renamed aside first; either way ``target`` never
    holds a partial cycle, and no other folder under the root is touched.
    """
    if not target.exists():
        os.rename(build, target)
        return
    if _renameat2_exchange(build, target):
        shutil.rmtree(build)  # now holds the previous version
        return
    old = target.with_name(f".old-{target.name}.{os.urandom(4).hex()}")
    os.rename(target, old)
    try:
        os.rename(build, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def restore_interrupted_publish(root: Path, cycle: str) -> None:
    """Put back the previous cycle folder that an interrupted non-atomic publish moved aside."""
    olds = sorted(root.glob(f".old-{cycle}.*"), key=lambda p: p.stat().st_mtime)
    target = root / cycle
    if olds and not target.exists():
        os.rename(olds[-1], target)
        olds = olds[:-1]
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


class CycleLock:
    """Exclusive lock per cycle id so two runs of the same cycle never interleave."""

    def __init__(self, root: Path, cycle: str) -> None:
        self.path = root / f".lock-{cycle}"
        self.fd: int | None = None

    def __enter__(self) -> CycleLock:
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise CycleError(f"cycle {self.path.name[6:]!r} is already being run "
                             f"(lock {self.path})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.path.unlink(missing_ok=True)
