"""Photos/s of `shelfready clean` from and to an S3-compatible server vs local disk, same photos, same run.

    python bench/object_store.py                          # 120 clothing photos, 2 rounds, local and ray
    python bench/object_store.py --n 40 --rounds 3 --engines local

The server is moto's (``ThreadedMotoServer``, the one tests/test_object_store.py
uses) on 127.0.0.1 in this process; the CLI reaches it the standard way
(``AWS_ENDPOINT_URL`` and the AWS key variables). A fixed list of photos (every
k-th of ../shared/data/clothing_small/validation, else sample_images/ repeated
under new names) is copied to a temp folder and uploaded to ``s3://bench/in``.
Each round runs, per engine, the local-disk run and the object-store run in an
order that alternates from round to round, each into a fresh OUT; a run is
timed as the whole command (start-up, listing, model load, summary and
manifest merge included). Reported per engine: the median photos/s of each and
the median of the per-round ratios object store / local disk (target >= 0.85).

What it does not measure: a real network. The server runs on this machine (no
latency, no bandwidth limit, but its Python request handling shares the cores
with the cleaning); AWS, GCS, MinIO and R2 are not measured here.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import cpu_name

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def pick_photos(n: int) -> list[Path]:
    photos = sorted((DATA / "clothing_small" / "validation").glob("*/*.jpg"))
    if len(photos) >= n:
        return [photos[int(i * len(photos) / n)] for i in range(n)]
    samples = sorted((ROOT / "sample_images").glob("*.jpg"))
    return [samples[i % len(samples)] for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[3:7])} failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120, help="photos")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--engines", default="local,ray", help="comma-separated: local, ray")
    ap.add_argument("--workers", type=int, default=0, help="--workers of each run (0 = one per core)")
    args = ap.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="bench",
                          aws_secret_access_key="bench", region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    tmp = Path(tempfile.mkdtemp(prefix="shelfready-objstore-"))
    try:
        src = tmp / "in"
        src.mkdir()
        for i, p in enumerate(pick_photos(args.n)):
            name = f"{i:04d}-{p.name}"
            shutil.copy(p, src / name)
            client.upload_file(str(src / name), "bench", f"in/{name}")
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        base = [sys.executable, "-m", "cli", "clean"]
        extra = ["--quiet", "--workers", str(args.workers)]
        speeds: dict[tuple[str, str], list[float]] = {}
        ratios: dict[str, list[float]] = {e: [] for e in engines}
        for r in range(args.rounds):
            for engine in engines:
                eng = ["--engine", engine]
                runs = {"disk": [*base, str(src), str(tmp / f"out-{engine}-{r}"), *extra, *eng],
                        "s3": [*base, "s3://bench/in", f"s3://bench/out-{engine}-{r}", *extra, *eng]}
                order = ["disk", "s3"] if (r % 2 == 0) else ["s3", "disk"]
                got = {}
                for where in order:
                    wall = timed(runs[where], env)
                    got[where] = args.n / wall
                    speeds.setdefault((engine, where), []).append(got[where])
                    print(f"round {r + 1} {engine:>5} {where:>4}: {args.n} photos in {wall:6.1f} s = "
                          f"{got[where]:.2f} photos/s", flush=True)
                ratios[engine].append(got["s3"] / got["disk"])
        print(f"\n{args.n} photos, {args.rounds} rounds, --workers {args.workers}: {cpu_name()}")
        print(f"{'engine':>6}  {'disk photos/s':>13}  {'s3 photos/s':>11}  {'s3/disk (median of rounds)':>27}")
        for engine in engines:
            ratio = statistics.median(ratios[engine])
            print(f"{engine:>6}  {statistics.median(speeds[(engine, 'disk')]):>13.2f}  "
                  f"{statistics.median(speeds[(engine, 's3')]):>11.2f}  {ratio:>27.2f}"
                  f"{'' if ratio >= 0.85 else '  << under the 0.85 target'}   rounds: "
                  + ", ".join(f"{x:.2f}" for x in ratios[engine]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    main()
