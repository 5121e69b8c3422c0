"""Shared plumbing of the benches: the retrieval benches' arguments, run and table, and the CPU
utilisation figure of the speed benches (``tree_cpu_seconds``, ``utilisation``, ``CpuMeter``)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path("/tmp/shelfready-cache")
# A run that keeps less than this share of its cores busy is flagged (issue 23: OpenVINO pinned
# every worker to the same core and a third of the machine sat idle).
UTILISATION_FLOOR = 0.90


def given_cores() -> int:
    """Cores this process may run on (its affinity), which its children inherit."""
    import os

    return len(os.sched_getaffinity(0))


def _tree(pid: int | None):
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(pid: int | None = None) -> dict[tuple[int, float], float]:
    """CPU seconds (user + system) of a process and each of its live descendants, by (pid, start
    time). Reaped children's times are left out: whether they reach the parent depends on how it
    waits (Ray's raylet does not pass its workers' on), so ``CpuMeter`` follows every process itself."""
    import psutil

    out = {}
    try:
        procs = _tree(pid)
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                out[(p.pid, p.create_time())] = t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return out


def utilisation(cpu_seconds: float, wall_seconds: float, cores: int) -> float:
    """CPU used as a share of the cores given over the run."""
    return cpu_seconds / max(1e-9, wall_seconds * cores)


def flag(share: float) -> str:
    """``share`` as a percentage, marked when under UTILISATION_FLOOR."""
    return f"{share * 100:.0f} %" + (f"  << under {UTILISATION_FLOOR * 100:.0f} %" if share < UTILISATION_FLOOR else "")


class CpuMeter:
    """``with CpuMeter(cores) as m: ...`` then ``m.cpu``, ``m.wall``, ``m.share``: the CPU time of a
    process tree over the block (this process and its descendants, or ``pid``'s) per core given.

    The tree is sampled every ``interval`` seconds: each process counts from its first sample (0
    when it started inside the block) to its last, so workers that start and end inside the
    block count too (a process living less than one interval can be missed)."""

    def __init__(self, cores: int | None = None, pid: int | None = None, interval: float = 0.2) -> None:
        self.cores, self.pid, self.interval = cores or given_cores(), pid, interval
        self.cpu = self.wall = self.share = 0.0

    def _sample(self) -> None:
        for key, seconds in tree_cpu_seconds(self.pid).items():
            first = self._first.setdefault(key, 0.0 if self._started else seconds)
            self._last[key] = max(seconds, first)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuMeter":
        import threading

        self._first, self._last, self._started = {}, {}, False
        self._sample()
        self._started = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._sample()
        self.cpu = sum(self._last[k] - self._first[k] for k in self._last)
        self.share = utilisation(self.cpu, self.wall, self.cores)
