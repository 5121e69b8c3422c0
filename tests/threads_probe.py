"""What a pool worker's inference threads may run on, seen from inside while they infer: a per-photo
step the spawned workers import by name (tests/test_threading.py)."""
from __future__ import annotations

import os
import threading

from engines.batch import process_one


def thread_affinities() -> dict[int, tuple[int, ...]]:
    """The CPUs each thread of this process may run on now (/proc, sched_getaffinity per thread id)."""
    import psutil

    out = {}
    for t in psutil.Process().threads():
        try:
            out[t.id] = tuple(sorted(os.sched_getaffinity(t.id)))
        except OSError:  # the thread ended in between
            continue
    return out


def affinities_while(work) -> dict[str, list[list[int]]]:
    """Every CPU set each thread had while ``work()`` ran in another thread (sampled until it ends).

    OpenVINO pins its threads only while they run an inference (and restores them after), so the
    affinities are read during the calls, not after."""
    seen: dict[int, set] = {}
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    th = threading.Thread(target=run)
    th.start()
    while True:
        for tid, cpus in thread_affinities().items():
            seen.setdefault(tid, set()).add(cpus)
        if done.wait(0.002):
            break
    th.join()
    return {str(tid): sorted(list(c) for c in sets) for tid, sets in seen.items()}


def process_and_probe(args):
    """``process_one``, then what this worker runs on: its process id, its CPU set, the pinning its
    OpenVINO remover was compiled with (read back from the compiled model) and the CPU sets its
    threads had during a few more calls of the remover."""
    import numpy as np

    job, task = args
    row = process_one(job, task)
    from removers.segment import get_session

    runner = get_session(job.clean.model, job.clean.runtime).inner_session
    port = runner.get_inputs()[0]
    feed = {port.name: np.zeros([d.get_length() for d in port.shape], np.float32)}

    def infer() -> None:
        for _ in range(3):
            runner.run(None, feed)

    row["probe"] = {"pid": os.getpid(), "given": sorted(os.sched_getaffinity(0)),
                    "pinning": bool(runner.compiled.get_property("ENABLE_CPU_PINNING")),
                    "threads": affinities_while(infer)}
    return row
