"""CPU used by shelfready's documented commands, as a share of the cores they are given.

    python -m bench.utilisation                     # demo_data/: 40 listings, 40 queries
    python -m bench.utilisation --listings ../shared/data/clothing_small/train \
        --queries ../shared/data/clothing_small/validation --limit 240 [--baseline OTHER_CHECKOUT]

Each command runs as the README shows it, in a fresh process, on a copy of the photos
(the listings as the catalog, the queries as the queries, a folder per label; ``--limit``:
a seeded sample of that many photos per side), with
every cache in a fresh folder so nothing is skipped; ``CpuMeter`` sums the CPU time of the
command's whole process tree (workers, Ray's processes) over its wall time. Under 90 % of
the given cores is flagged. Model load and process start-up count too, as a user pays them.
The API under 8 clients is measured by ``bench/api_load.py --levels 8`` (its server's share).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import ROOT, CpuMeter, cpu_name, flag, given_cores


def commands(workers: int) -> dict[str, list[str]]:
    """The documented commands, run from a folder holding listings/ and queries/."""
    w = str(workers)
    return {
        "clean": ["shelfready", "clean", "listings", "ready", "--workers", w],
        "catalog build": ["shelfready", "catalog", "build", "listings", "--labels-from-folders", "--out", "cat"],
        "evaluate": ["shelfready", "evaluate", "--catalog", "cat", "--queries", "queries",
                     "--scenario", "shop-search", "--out", "report", "--workers", w],
        "clean --engine ray": ["shelfready", "clean", "listings", "ready-ray", "--engine", "ray", "--workers", w],
    }


def copy_sample(src: Path, dst: Path, limit: int, seed: int = 0) -> None:
    """The photos under ``src`` (label sub-folders kept), or a seeded sample of ``limit`` of them."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
    if limit:
        files = sorted(random.Random(seed).sample(files, min(limit, len(files))))
    for f in files:
        (dst / f.parent.relative_to(src)).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst / f.relative_to(src))


def run(name: str, argv: list[str], work: Path, env: dict, cores: int) -> dict:
    exe = Path(sys.executable).with_name(argv[0])
    with CpuMeter(cores) as meter:
        proc = subprocess.run([str(exe), *argv[1:]], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        raise SystemExit(f"{name}: exit {proc.returncode}: {tail[0]}")
    return {"command": " ".join(argv), "wall_s": round(meter.wall, 1), "cpu_s": round(meter.cpu, 1),
            "share": round(meter.share, 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listings", type=Path, default=ROOT / "demo_data" / "listings",
                    help="the catalog's photos, a sub-folder per label")
    ap.add_argument("--queries", type=Path, default=ROOT / "demo_data" / "queries",
                    help="the query photos, a sub-folder per label")
    ap.add_argument("--limit", type=int, default=0, help="a seeded sample of this many photos per side (0 = all)")
    ap.add_argument("--workers", type=int, default=0, help="0 = the cores given")
    ap.add_argument("--only", action="append", help="run only this command (repeatable)")
    ap.add_argument("--baseline", type=Path, help="another checkout: each command also runs with its code, "
                    "right after this one's, into a folder of its own")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "utilisation.json")
    args = ap.parse_args(argv)
    cores = given_cores()
    workers = args.workers or cores
    results = {}
    with tempfile.TemporaryDirectory(prefix="shelfready-util-") as tmp:
        work = Path(tmp)
        for side, folder in (("listings", args.listings), ("queries", args.queries)):
            copy_sample(folder, work / side, args.limit)
        codes = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
        for code, root in codes.items():  # each code its own outputs and caches: nothing is skipped
            (work / code).mkdir()
            for side in ("listings", "queries"):
                os.symlink(work / side, work / code / side)
        for name, cmd in commands(workers).items():
            if args.only and name not in args.only:
                continue
            for code, root in codes.items():
                env = {**os.environ, "PYTHONPATH": str(root), "SHELFREADY_CACHE": str(work / code / "cache"),
                       "RAY_USAGE_STATS_ENABLED": "0"}
                results.setdefault(name, {})[code] = r = run(name, cmd, work / code, env, cores)
                print(f"{name:20s} {code:8s} {r['wall_s']:7.1f} s wall {r['cpu_s']:7.1f} s CPU  "
                      f"{flag(r['share'])} of {cores} cores", flush=True)
    report = {"cpu": cpu_name(), "cores": cores, "workers": workers, "listings": str(args.listings),
              "queries": str(args.queries), "limit": args.limit, "baseline": str(args.baseline or ""),
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"CPU: {report['cpu']}; written {args.out}")
    return report


if __name__ == "__main__":
    main()
