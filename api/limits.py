"""Bounded inference pool: admission control, worker threads and a deadline.

A request is admitted only while fewer than `capacity` jobs are running or
waiting; otherwise it is refused at once (503 + Retry-After) instead of piling
up. A job keeps its slot until its thread really finishes, even when the client
was already answered 504, so the bound holds under timeouts too. Model calls
run in a ThreadPoolExecutor (onnxruntime and torch release the GIL); the event
loop only awaits them. After each job the memory it freed is handed back to the
OS (glibc ``malloc_trim``), so the server's RSS falls back after a big photo
instead of staying at its peak.
"""
from __future__ import annotations

import asyncio
import ctypes
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """All workers busy and the waiting queue full."""


class Timeout(Exception):
    """The job did not finish within the request deadline."""


class WorkPool:
    def __init__(self, workers: int, capacity: int, timeout: float) -> None:
        if workers < 1 or capacity < workers:
            raise ValueError("need workers >= 1 and capacity >= workers")
        self.workers = workers
        self.capacity = capacity
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shelfready-infer")
        self._lock = threading.Lock()
        self._admitted = 0
        self._refused = 0
        self._timed_out = 0

    def stats(self) -> dict:
        with self._lock:
            return {"workers": self.workers, "capacity": self.capacity, "in_flight": self._admitted,
                    "refused": self._refused, "timed_out": self._timed_out}

    def _release(self, _fut: Future) -> None:
        with self._lock:
            self._admitted -= 1
        _trim()

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Run fn(*args) on a worker; raise Busy when full, Timeout past the deadline."""
        with self._lock:
            if self._admitted >= self.capacity:
                self._refused += 1
                raise Busy()
            self._admitted += 1
        try:
            fut = self._executor.submit(fn, *args)
        except BaseException:
            with self._lock:
                self._admitted -= 1
            raise
        fut.add_done_callback(self._release)  # slot freed when the thread is done
        wrapped = asyncio.wrap_future(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), self.timeout)
        except asyncio.TimeoutError:
            fut.cancel()  # drops it if still queued; a running call finishes on its own
            with self._lock:
                self._timed_out += 1
            wrapped.add_done_callback(_consume)
            raise Timeout() from None
        except asyncio.CancelledError:  # client went away: do not leave it queued
            fut.cancel()
            wrapped.add_done_callback(_consume)
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _load_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), or a no-op where there is none (musl, macOS)."""
    if sys.platform.startswith("linux"):
        try:
            trim = ctypes.CDLL("libc.so.6").malloc_trim
            return lambda: trim(0)
        except (OSError, AttributeError):
            pass
    return lambda: None


_trim = _load_trim()


def _consume(fut: "asyncio.Future") -> None:
    """Retrieve a late result/exception so asyncio does not log it as unhandled."""
    if not fut.cancelled():
        fut.exception()
