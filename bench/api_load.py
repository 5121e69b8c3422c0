"""Throughput and latency of POST /v1/clean vs `shelfready clean` on the same photos.

    python -m bench.api_load [--levels 1,4,16] [--requests 48] [--reps 4] [--out FILE]
    python -m bench.api_load --levels 4,8,16 --rounds 2 --baseline /tmp/old-checkout --no-batch

* The server is `shelfready serve` in a subprocess on 127.0.0.1 (default workers:
  one per core), warmed up with one request per photo. Clients are threads with
  one keep-alive httpx connection each; every request cleans a sample photo with
  the default settings (amazon preset, jpg) and must answer 200.
* Anchor, in the same run: the batch runner (`engines.batch.run_batch`, what
  `shelfready clean` calls, same default settings, one process per core) on the
  same photos copied `--reps` times. Its start-up (spawning workers, loading
  the model) is taken out by the difference of two runs: a run on one photo per
  worker and a run on all copies, rate = extra photos / extra seconds. The batch
  is measured before and after the API levels and the mean is the anchor, so
  load drifting on a shared machine hits both sides alike.
* Reported: photos/s and p50/p95/p99 latency per concurrency level, and each
  level's throughput as a ratio of the batch throughput (target >= 0.85); the
  server's CPU seconds per photo (steadier than photos/s on a shared machine); the CPU
  utilisation of each level: the server's process tree's CPU time as a share of
  the cores given (under 90 % is flagged), and the same with the bench's clients
  added (they share the cores with the server on one machine).
* ``--baseline DIR``: a second server from another checkout of this project (e.g.
  ``git archive`` of an older commit) runs beside this one; with ``--rounds`` each
  level runs on both, alternating which goes first, so the two are measured side by
  side under the same load; reported as the ratio this/baseline per level.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench._common import CpuMeter, flag, given_cores
from bench.api_server import SAMPLES, percentile, photos, serve


def run_level(url: str, batch: list[tuple[str, bytes]], clients: int, total: int,
              server_pid: int | None = None) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(total))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            for i in counter:  # shared iterator: exactly `total` requests in all
                name, data = batch[i % len(batch)]
                t = time.perf_counter()
                r = c.post("/v1/clean", files={"photo": (name, data)})
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    with CpuMeter(pid=server_pid) as server_cpu, CpuMeter() as all_cpu:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - start
    ok = statuses.get(200, 0)
    return {"clients": clients, "requests": total, "status_counts": statuses, "seconds": round(wall, 2),
            "photos_per_s": round(ok / wall, 3), "server_cpu_utilisation": round(server_cpu.share, 3),
            "server_cpu_s_per_photo": round(server_cpu.cpu / max(1, ok), 3),
            "cpu_utilisation_with_clients": round(all_cpu.share, 3),
            "p50_s": round(percentile(latencies, 0.50), 3), "p95_s": round(percentile(latencies, 0.95), 3),
            "p99_s": round(percentile(latencies, 0.99), 3)}


def batch_rate(photo_dir: Path, reps: int, workers: int) -> dict:
    """Steady-state photos/s of the batch runner, start-up cost differenced out."""
    from engines.batch import run_batch
    from engines.config import BatchConfig
    from engines.job import BatchJob

    files = sorted(p for p in photo_dir.glob("*.jpg"))
    with tempfile.TemporaryDirectory(prefix="shelfready-bench-") as tmp:
        small, large = Path(tmp, "small"), Path(tmp, "large")
        small.mkdir()
        large.mkdir()
        for i, f in enumerate(files[:workers]):
            shutil.copy(f, small / f"{i}-{f.name}")
        for r in range(reps):
            for f in files:
                shutil.copy(f, large / f"{r}-{f.name}")
        runs = {}
        for name, folder in (("small", small), ("large", large)):
            job = BatchJob(in_dir=folder, out_dir=Path(tmp, f"out-{name}"), batch=BatchConfig(workers=workers))
            summary = run_batch(job, progress=False)
            if summary.failed:
                raise SystemExit(f"batch failed on {summary.failed} photos")
            runs[name] = (summary.total, summary.seconds)
    (n_small, t_small), (n_large, t_large) = runs["small"], runs["large"]
    steady = (n_large - n_small) / max(1e-9, t_large - t_small)
    return {"photos": n_large, "seconds": round(t_large, 2), "startup_run": [n_small, round(t_small, 2)],
            "photos_per_s_including_startup": round(n_large / t_large, 3),
            "photos_per_s": round(steady, 3)}


def _levels(servers: dict, batch, levels: list[int], requests: int, rounds: int) -> dict[str, list[dict]]:
    """Every level on every server, ``rounds`` times, the servers' order alternating per round;
    per server and level the run of median photos/s (its latencies and utilisation with it)."""
    runs: dict[str, dict[int, list[dict]]] = {name: {n: [] for n in levels} for name in servers}
    names = list(servers)
    for r in range(rounds):
        for n in levels:
            for name in names[r % len(names):] + names[:r % len(names)]:
                url, proc = servers[name]
                level = run_level(url, batch, n, max(requests, 2 * n), proc.pid)
                runs[name][n].append(level)
                print(f"round {r + 1} {name:<8} {n:>3} clients: {level['photos_per_s']:.2f} photos/s, "
                      f"server CPU {level['server_cpu_utilisation'] * 100:.0f} % "
                      f"({level['cpu_utilisation_with_clients'] * 100:.0f} % with clients)", flush=True)
    out = {}
    for name, by_level in runs.items():
        out[name] = []
        for n, rs in by_level.items():
            level = dict(sorted(rs, key=lambda lv: lv["photos_per_s"])[len(rs) // 2])  # its latencies
            for key in ("photos_per_s", "server_cpu_utilisation", "cpu_utilisation_with_clients",
                        "server_cpu_s_per_photo"):
                level[key + "_rounds"] = [lv[key] for lv in rs]
                level[key] = round(statistics.median(level[key + "_rounds"]), 3)
            out[name].append(level)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=SAMPLES)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--requests", type=int, default=48, help="requests per level (at least 2 per client)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every level (medians reported)")
    ap.add_argument("--reps", type=int, default=4, help="copies of the photos for the batch anchor")
    ap.add_argument("--workers", type=int, default=0, help="server threads and batch processes (0 = cores)")
    ap.add_argument("--baseline", type=Path, help="another checkout: its server runs beside this one")
    ap.add_argument("--no-batch", action="store_true", help="skip the batch anchor")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cores = given_cores()
    workers = args.workers or cores
    levels = [int(x) for x in args.levels.split(",")]
    batch = photos(args.photos)

    result: dict = {"cores": cores, "workers": workers, "photos": len(batch),
                    "load_average_start": os.getloadavg()}
    before = None if args.no_batch else batch_rate(args.photos, args.reps, workers)
    flags = ("--workers", str(workers), "--queue", "64", "--timeout", "900")
    with ExitStack() as stack:
        servers = {"this": stack.enter_context(serve(*flags))}
        if args.baseline:
            servers["baseline"] = stack.enter_context(serve(*flags, code=args.baseline))
        for url, _proc in servers.values():
            with httpx.Client(base_url=url, timeout=600) as c:  # warm-up: every photo once
                for name, data in batch:
                    assert c.post("/v1/clean", files={"photo": (name, data)}).status_code == 200
        per_server = _levels(servers, batch, levels, args.requests, args.rounds)
    result["api"] = per_server["this"]
    if args.baseline:
        result["baseline"] = {"code": str(args.baseline), "api": per_server["baseline"]}
        for mine, theirs in zip(result["api"], per_server["baseline"]):
            mine["ratio_to_baseline"] = round(mine["photos_per_s"] / theirs["photos_per_s"], 3)
            mine["cpu_per_photo_to_baseline"] = round(
                mine["server_cpu_s_per_photo"] / theirs["server_cpu_s_per_photo"], 3)
    if before is not None:
        after = batch_rate(args.photos, args.reps, workers)
        anchor = (before["photos_per_s"] + after["photos_per_s"]) / 2
        result["batch"] = {"before": before, "after": after, "photos_per_s": round(anchor, 3)}
        for level in result["api"]:
            level["ratio_to_batch"] = round(level["photos_per_s"] / anchor, 3)
        result["best_ratio"] = max(level["ratio_to_batch"] for level in result["api"])
    result["load_average_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    for name, api in per_server.items():
        for level in api:
            print(f"{name:<8} {level['clients']:>3} clients: {level['photos_per_s']:.2f} photos/s"
                  + (f" (x{level['ratio_to_baseline']:.2f} baseline)" if "ratio_to_baseline" in level else "")
                  + f", server {level['server_cpu_s_per_photo']:.3f} CPU s/photo"
                  + (f" (x{level['cpu_per_photo_to_baseline']:.2f})" if "cpu_per_photo_to_baseline" in level else "")
                  + f", server CPU {flag(level['server_cpu_utilisation'])} of {cores} cores")
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
