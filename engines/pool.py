"""The local engine: worker processes that survive their own deaths and stop on a signal.

``run_pool(fn, tasks, ...)`` calls ``fn(task)`` in worker processes, one task
per worker at a time, and hands each result to ``on_result`` in the calling
process as it arrives (completion order). Unlike ``concurrent.futures``, it
knows which task a dead worker was running:

* a worker that dies (SIGKILL, a segfault in a native decoder, the OOM killer)
  is replaced; its task is retried once, alone (no other worker running), after
  the others; if that kills a worker too, ``on_death(task, signum)`` reports it
  and the pool goes on;
* the first SIGINT/SIGTERM stops handing out tasks, lets the running ones
  finish for up to ``grace`` seconds, then kills the workers; a second signal
  kills them at once. The signal is returned so the caller can exit 128+N;
* workers ignore SIGINT/SIGTERM (the pool decides when they stop) and die with
  the pool's process (PR_SET_PDEATHSIG on Linux), even when it is SIGKILLed.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from multiprocessing.connection import wait

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's pipe closing ends the worker instead
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker(conn, parent: int, fn, initializer, initargs) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the pool is gone
            return
        if task is None:
            return
        conn.send(fn(task))


class _Stop:
    """Signals received while the pool runs (main thread only)."""

    def __init__(self) -> None:
        self.signum = 0
        self.count = 0

    def __call__(self, signum, _frame) -> None:
        self.signum = self.signum or signum
        self.count += 1


@contextmanager
def signals_caught(stop, enabled: bool = True):
    """SIGINT/SIGTERM go to ``stop(signum, frame)`` while the block runs (main thread only),
    then the previous handlers come back. Shared by every engine's driver loop."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class _Slot:
    def __init__(self, ctx, fn, initializer, initargs) -> None:
        here, there = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(there, os.getpid(), fn, initializer, initargs), daemon=True)
        self.proc.start()
        there.close()
        self.conn = here
        self.task = None
        self.retry = False  # running a task for the second time, alone

    def give(self, task, retry: bool = False) -> None:
        self.task, self.retry = task, retry
        self.conn.send(task)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


def run_pool(fn: Callable, tasks: Iterable, workers: int, on_result: Callable, on_death: Callable,
             initializer: Callable | None = None, initargs: tuple = (), grace: float = 5.0,
             catch_signals: bool = True) -> int:
    """Run ``fn`` over ``tasks`` in ``workers`` processes; returns the signal that stopped it, or 0.

    ``fn``, ``initializer`` and the tasks must be picklable (module-level functions).
    """
    ctx = mp.get_context("spawn")
    queue = deque(tasks)
    retries: deque = deque()
    stop = _Stop()
    slots: list[_Slot | None] = [None] * max(1, min(workers, len(queue) or 1))
    stop_deadline = None

    def give(i: int, task, retry: bool = False) -> None:
        if slots[i] is None:  # started on demand: a dead worker is replaced only when work is left
            slots[i] = _Slot(ctx, fn, initializer, initargs)
        slots[i].give(task, retry)

    try:
        with signals_caught(stop, catch_signals):
            while True:
                if stop.signum and stop_deadline is None:
                    stop_deadline = time.monotonic() + (grace if stop.count == 1 else 0)
                if stop.count > 1 or (stop_deadline is not None and time.monotonic() >= stop_deadline):
                    break
                if not stop.signum:
                    for i, s in enumerate(slots):
                        if (s is None or s.task is None) and queue:
                            give(i, queue.popleft())
                    # a retried task runs alone: only once every other worker is idle
                    if not queue and retries and all(s is None or s.task is None for s in slots):
                        give(0, retries.popleft(), retry=True)
                busy = [s for s in slots if s is not None and s.task is not None]
                if not busy:
                    break
                ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=0.2)
                for s in busy:
                    if s.conn in ready or (s.proc.sentinel in ready and s.conn.poll()):
                        try:
                            result = s.conn.recv()
                        except (EOFError, OSError):
                            pass
                        else:
                            task, s.task = s.task, None
                            on_result(task, result)
                            continue
                    if s.proc.sentinel in ready or not s.proc.is_alive():
                        s.proc.join(5)
                        code = s.proc.exitcode
                        task, retried = s.task, s.retry
                        s.conn.close()
                        slots[slots.index(s)] = None
                        if stop.signum:  # killed while stopping: the task stays undone
                            continue
                        signum = -code if code is not None and code < 0 else 0
                        if retried:
                            on_death(task, signum, code)
                        else:
                            retries.append(task)
    finally:
        live = [s for s in slots if s is not None]
        for s in live:
            try:
                if s.task is None and s.proc.is_alive():
                    s.conn.send(None)
            except OSError:
                pass
        for s in live:
            if s.task is None:
                s.proc.join(2)
            s.kill()
    return stop.signum
