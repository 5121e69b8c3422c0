"""Fault injection for the batch tests: functions the spawned workers import by name.

A "poison" photo crashes the worker process for real (a NULL read, SIGSEGV), as
a bug in a native decoder would; every other photo goes through the real
per-photo step.
"""
from __future__ import annotations

import ctypes
import os
import signal

from engines.batch import process_one


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)  # what ctypes.string_at(0) would do, without a core dump prompt
    ctypes.string_at(0)


def process_or_crash(args):
    job, task = args
    if task.src.name.startswith("poison"):
        segfault()
    return process_one(job, task)


def square_or_crash(n: int) -> int:
    if n < 0:
        segfault()
    return n * n


def crash_once(args) -> int:
    """Crashes the first time a marker file is absent (then creates it): a transient death."""
    n, marker = args
    if n == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        segfault()
    return n * n
