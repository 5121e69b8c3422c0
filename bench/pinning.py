"""Does OpenVINO's pinning pay in a pool worker that owns its cores? (issue 23, removers.runtime.PIN_OWNED_CPUS)

    python bench/pinning.py --n 30 --rounds 3

The local pool's own layout (``--workers`` processes, cores // workers model threads each,
u2netp at the default runtime), three ways, alternating rounds, each run timed whole:

* ``shared``: the workers share every core, nothing pinned (the default);
* ``own``: each worker given its own cores (``removers.runtime.own_cpus``), not pinned;
* ``own+pin``: the same, and OpenVINO pins its threads there (``PIN_OWNED_CPUS`` forced on).

Reported: median photos/s, its ratio to ``shared``, and the CPU utilisation of the cores given.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("shared", "own", "own+pin")


def init(mode: str, counter, workers: int, threads: int) -> None:
    """Worker set-up: the pool's own, then (``own*``) this worker's share of the cores."""
    from engines.batch import init_worker
    from removers import runtime

    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    init_worker(threads)
    if mode != "shared":
        cpus = sorted(os.sched_getaffinity(0))
        share = len(cpus) // workers or 1
        runtime.own_cpus(set(cpus[(slot % workers) * share:(slot % workers) * share + share]) or {cpus[0]})
        runtime.PIN_OWNED_CPUS = mode == "own+pin"


def run_once(src: Path, out: Path, mode: str, workers: int) -> tuple[float, float, int]:
    from bench._common import CpuMeter
    from engines.batch import _process, threads_per_worker, with_threads
    from engines.config import BatchConfig
    from engines.job import BatchJob
    from engines.plan import plan_batch
    from engines.pool import run_pool

    threads = threads_per_worker(workers)
    job = with_threads(BatchJob(in_dir=src, out_dir=out, batch=BatchConfig(workers=workers)), threads)
    out.mkdir(parents=True)
    todo, _ = plan_batch(job)
    counter = mp.get_context("spawn").Value("i", 0)
    rows: list[dict] = []
    with CpuMeter(min(workers, len(os.sched_getaffinity(0)))) as cpu:
        run_pool(_process, [(job, t) for t in todo], workers, on_result=lambda _t, row: rows.append(row),
                 on_death=lambda *a: None, initializer=init, initargs=(mode, counter, workers, threads))
    return len(todo) / cpu.wall, cpu.share, sum(r["status"] != "failed" for r in rows)


def main(argv=None) -> int:
    from bench._common import cpu_name, flag
    from bench.clean_throughput import photo_list

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="shelfready-pinning-"))
    try:
        src = tmp / "in"
        src.mkdir()
        for i, p in enumerate(photo_list(a.n)):
            shutil.copy(p, src / f"{i:03d}.jpg")
        print(f"{a.n} photos, {a.rounds} rounds, {a.workers} workers, {cpu_name()}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        res: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
        for r in range(a.rounds):
            for mode in MODES[r % 3:] + MODES[:r % 3]:
                rate, share, ok = run_once(src, tmp / f"out-{r}-{mode}", mode, a.workers)
                res[mode].append((rate, share))
                print(f"round {r + 1} {mode:<8} {rate:.2f} photos/s, CPU {share * 100:.0f} %, {ok} ok, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        base = statistics.median(x for x, _ in res["shared"])
        for mode in MODES:
            rate = statistics.median(x for x, _ in res[mode])
            print(f"{mode:<8} {rate:.2f} photos/s  x{rate / base:.2f} vs shared  "
                  f"CPU {flag(statistics.median(s for _, s in res[mode]))}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    raise SystemExit(main())
