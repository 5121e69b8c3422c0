"""OS locks of a catalog folder: one writer at a time; readers pin the generation they load.

Both are ``flock(2)`` locks, which the kernel drops when their process dies
(even by SIGKILL), so a crashed writer or reader never leaves a stale lock:

* the write lock is exclusive, on ``<catalog>/.lock`` (created on first write,
  never deleted: deleting a lock file lets two writers lock two different files);
* a reader takes a shared lock on the generation folder itself while it loads
  it; a writer deletes an old generation only if it gets an exclusive lock on
  that folder without waiting, so a generation being loaded is never removed.

flock locks belong to an open file, not to a thread or a process: two
``Catalog`` objects in one process exclude each other like two processes do.
They work on local file systems (not reliably over NFS) and need a POSIX
system (Linux, macOS).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"


class CatalogBusy(TimeoutError):
    """Another process kept the catalog's write lock longer than the timeout."""


def _need_flock() -> None:
    if fcntl is None:  # pragma: no cover - Windows
        raise OSError("catalog locking needs flock(2), which this system lacks (POSIX only: Linux, macOS)")


class WriteLock:
    """The exclusive write lock of one catalog folder, held by one object (not thread-aware:
    the catalog serialises its own threads before taking it)."""

    def __init__(self, directory: Path, timeout: float, poll: float) -> None:
        self.path = Path(directory) / LOCK_FILE
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Wait up to ``timeout`` seconds for the lock; CatalogBusy when it expires."""
        _need_flock()
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise OSError(f"cannot write to catalog {self.path.parent}: {exc.strerror}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise CatalogBusy(
                        f"catalog {self.path.parent} is busy: another process has been writing to it for "
                        f"more than {self.timeout:g} s; try again later or raise the lock timeout") from None
                time.sleep(self.poll)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file drops the lock

    def __del__(self) -> None:
        self.release()


def _lock_dir(path: Path, mode: int) -> int | None:
    """An open descriptor of folder ``path`` locked with ``mode`` (never waits); None if the
    folder is gone or somebody holds a conflicting lock."""
    _need_flock()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def pinned(generation: Path) -> Iterator[bool]:
    """Shared lock on a generation folder while it is read: yields False if it is gone or
    being deleted (the header has moved on: read it again)."""
    fd = _lock_dir(generation, fcntl.LOCK_SH if fcntl else 0)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


@contextmanager
def claimed(generation: Path) -> Iterator[bool]:
    """Exclusive lock on an old generation folder before deleting it: yields False while a
    reader still loads it (a later writer deletes it)."""
    fd = _lock_dir(generation, fcntl.LOCK_EX if fcntl else 0)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)
