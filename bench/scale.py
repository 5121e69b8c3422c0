"""Photos/s of the ray engine vs the local pool on the same photos, same run, alternating rounds.

    python bench/scale.py                      # 120 clothing photos, 3 rounds, then the 2-node run
    python bench/scale.py --n 40 --rounds 2 --no-cluster --commands

Phase 1 (engine overhead): one local Ray (``--workers`` CPUs, workers at nice 0 as
``shelfready clean --engine ray`` starts it) is started once, as a cluster would already be running; each round cleans the same photos into a
fresh folder with ``run_batch`` (the local pool, ``--workers`` processes) and
``run_batch_ray`` (an actor pool of ``--workers`` 1-CPU actors), in an order that
rotates each round. Each run is timed whole: worker/actor start-up and model
load included. Reported: median photos/s of each and the ratio ray/local, and
the CPU utilisation of each (the CPU time of this process's tree, Ray's raylet
and actors included, as a share of the ``--workers`` cores given; under 90 % is
flagged).

``--commands`` adds the same pair as whole ``shelfready clean`` commands, where
the ray one starts and stops its own local Ray (what a user without a cluster sees).

Phase 2 (2 nodes on one machine): ``ray.cluster_utils.Cluster`` with two raylets
of ``--workers // 2`` CPUs each; the ray engine cleans the photos on it; checked:
output bytes, manifest and summary equal the local engine's (timings aside),
photos per node; timed against one more local run (no speed-up is possible:
both nodes share the same cores).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench._common import CpuMeter, flag, given_cores  # noqa: E402
from bench.clean_throughput import photo_list  # noqa: E402


def _job(src: Path, out: Path, workers: int, size: int | None):
    from engines.config import BatchConfig
    from engines.job import BatchJob
    from hygiene.config import CleanConfig

    return BatchJob(in_dir=src, out_dir=out, clean=CleanConfig(size=size), batch=BatchConfig(workers=workers))


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def _cores(args) -> int:
    """Cores given to a run: its workers (= Ray CPUs), at most the cores this process may use."""
    return min(args.workers, given_cores())


def _engine_rounds(args, src: Path, tmp: Path) -> dict[str, list[float]]:
    from engines.batch import run_batch
    from engines.cluster import ray_connection
    from engines.config import RayConfig
    from engines.ray_engine import run_batch_ray

    runs = {"local": lambda out: run_batch(_job(src, out, args.workers, args.size), progress=False),
            "ray": lambda out: run_batch_ray(_job(src, out, args.workers, args.size), RayConfig(), progress=False)}
    rates: dict[str, list[float]] = {k: [] for k in runs}
    shares: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    with ray_connection(RayConfig(num_cpus=args.workers)):  # started once, as a cluster would be running
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                out = tmp / f"{name}-{r}"
                with CpuMeter(_cores(args)) as cpu:
                    secs, summary = _timed(lambda: runs[name](out))
                assert summary.cleaned + summary.needs_review == args.n, summary.counts()
                rates[name].append(args.n / secs)
                shares[name].append(cpu.share)
                print(f"round {r + 1} {name:<6} {args.n / secs:6.2f} photos/s ({secs:.1f} s), "
                      f"CPU {cpu.share * 100:.0f} % of {cpu.cores} cores", flush=True)
    return rates, shares


def _command_rounds(args, src: Path, tmp: Path) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    base = [sys.executable, "-m", "cli", "clean", str(src)]
    tail = ["--workers", str(args.workers), "--quiet"] + (["--size", str(args.size)] if args.size else [])
    cmds = {"local-cmd": lambda out: base + [str(out)] + tail,
            "ray-cmd": lambda out: base + [str(out)] + tail + ["--engine", "ray"]}
    rates: dict[str, list[float]] = {k: [] for k in cmds}
    shares: dict[str, list[float]] = {k: [] for k in cmds}
    names = list(cmds)
    for r in range(args.rounds):
        for name in names[r % 2:] + names[:r % 2]:
            with CpuMeter(_cores(args)) as cpu:
                secs, proc = _timed(lambda: subprocess.run(cmds[name](tmp / f"{name}-{r}"), cwd=ROOT, env=env,
                                                           capture_output=True, text=True))
            assert proc.returncode == 0, proc.stderr[-2000:]
            rates[name].append(args.n / secs)
            shares[name].append(cpu.share)
            print(f"round {r + 1} {name:<9} {args.n / secs:6.2f} photos/s ({secs:.1f} s), "
                  f"CPU {cpu.share * 100:.0f} % of {cpu.cores} cores", flush=True)
    return rates, shares


def _two_nodes(args, src: Path, tmp: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster
    from scale_helpers import nodes_of, outcome

    from engines.batch import run_batch
    from engines.cluster import LOCAL_SYSTEM_CONFIG
    from engines.config import RayConfig
    from engines.ray_engine import run_batch_ray

    per_node = max(1, args.workers // 2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node,
                                                            "_system_config": LOCAL_SYSTEM_CONFIG})
    cluster.add_node(num_cpus=per_node)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        with CpuMeter(_cores(args)) as cpu_ray:
            secs_ray, _ = _timed(lambda: run_batch_ray(_job(src, tmp / "2node", 0, args.size), RayConfig(),
                                                       progress=False))
        ray.shutdown()
        with CpuMeter(_cores(args)) as cpu_local:
            secs_local, _ = _timed(lambda: run_batch(_job(src, tmp / "2node-local", args.workers, args.size),
                                                     progress=False))
        same = outcome(tmp / "2node") == outcome(tmp / "2node-local")
        nodes = nodes_of(tmp / "2node")
    finally:
        cluster.shutdown()
    return {"ray_2node": args.n / secs_ray, "local": args.n / secs_local, "identical_to_local": same,
            "photos_per_node": sorted(nodes.values(), reverse=True),
            "cpu_utilisation": {"ray_2node": round(cpu_ray.share, 3), "local": round(cpu_local.share, 3)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=120, help="photos (every k-th of clothing_small/validation)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="local processes = Ray CPUs")
    p.add_argument("--size", type=int, default=None, help="output side, px [preset's]")
    p.add_argument("--commands", action="store_true", help="also time whole `shelfready clean` commands")
    p.add_argument("--no-cluster", action="store_true", help="skip the 2-node run")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shelfready-scale-"))
    try:
        src = tmp / "in"
        src.mkdir()
        for i, photo in enumerate(photo_list(args.n)):
            shutil.copy(photo, src / f"{i:04d}-{photo.parent.name}-{photo.name}")
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
        print(f"{args.n} photos, {args.rounds} rounds, {args.workers} workers, CPU: {cpu} x {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        report = {"n": args.n, "rounds": args.rounds, "workers": args.workers, "cpu": cpu,
                  "load_average_start": os.getloadavg()}
        rates, shares = _engine_rounds(args, src, tmp)
        if args.commands:
            more_rates, more_shares = _command_rounds(args, src, tmp)
            rates.update(more_rates)
            shares.update(more_shares)
        med = {k: statistics.median(v) for k, v in rates.items()}
        report["photos_per_s"] = {k: round(v, 3) for k, v in med.items()}
        report["cpu_utilisation"] = {k: round(statistics.median(v), 3) for k, v in shares.items()}
        report["ratio_ray_to_local"] = round(med["ray"] / med["local"], 3)
        if args.commands:
            report["ratio_ray_cmd_to_local_cmd"] = round(med["ray-cmd"] / med["local-cmd"], 3)
        if not args.no_cluster:
            report["two_nodes"] = _two_nodes(args, src, tmp)
        report["load_average_end"] = os.getloadavg()
        print(json.dumps(report, indent=2))
        for k, v in report["cpu_utilisation"].items():
            print(f"CPU utilisation {k:<10} {flag(v)} of {_cores(args)} cores")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
