"""Soak: many requests against one server; its memory must stay flat, no 5xx.

    python -m bench.api_soak [--n 2000] [--clients 4] [--warmup 200] [--out FILE]

`shelfready serve` runs in a subprocess on 127.0.0.1. The mix per 20 requests:
14 x POST /v1/clean (rotating sample photos, presets and formats, some JSON
answers), 4 x POST /v1/check, 1 x a text file (415), 1 x a 1x1 image (422).
Server RSS (/proc/PID/status) is sampled every `--sample` requests; the baseline
is the RSS after `--warmup` requests (sessions, arenas and JIT caches built),
growth = (final - baseline) / baseline (target < 5 %). Also reported: the
least-squares slope of RSS over the post-warm-up samples, in MiB per 1000
requests, and every status code seen (target: no 5xx).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from bench.api_server import SAMPLES, percentile, photos, rss_bytes, serve

MiB = 2 ** 20


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (120, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def request_for(i: int, batch: list[tuple[str, bytes]], tiny: bytes):
    """(path, params, files, data, expected status) of the i-th request of the mix."""
    name, data = batch[i % len(batch)]
    slot = i % 20
    if slot == 18:
        return "/v1/check", {}, {"photo": ("notes.jpg", b"not an image at all " * 20)}, {}, 415
    if slot == 19:
        return "/v1/clean", {}, {"photo": ("tiny.png", tiny)}, {}, 422
    if slot in (3, 8, 13, 17):
        return "/v1/check", {}, {"photo": (name, data)}, {"preset": "google"}, 200
    preset = ("amazon", "shopify", "google", "ebay", "etsy")[i % 5]
    fmt = ("jpg", "png", "webp")[i % 3]
    params = {"response": "json"} if i % 4 == 1 else {}
    return "/v1/clean", params, {"photo": (name, data)}, {"preset": preset, "format": fmt}, 200


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="requests in all")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=200, help="requests before the RSS baseline")
    ap.add_argument("--sample", type=int, default=50, help="RSS sample every this many requests")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=3 * 3600, help="stop early past this")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.warmup >= args.n:
        raise SystemExit("--warmup must be smaller than --n")
    batch, tiny = photos(SAMPLES), _tiny_png()

    statuses: dict[int, int] = {}
    unexpected: list[str] = []
    latencies: list[float] = []
    samples: list[tuple[int, int]] = []  # (requests done, rss bytes)
    lock = threading.Lock()
    done = {"n": 0}
    counter = iter(range(args.n))
    started = time.monotonic()

    server_args = ["--queue", "64", "--timeout", "900"]
    if args.workers:
        server_args += ["--workers", str(args.workers)]
    with serve(*server_args) as (url, proc):
        rss_start = rss_bytes(proc.pid)
        baseline = {"rss": None}

        def client() -> None:
            with httpx.Client(base_url=url, timeout=900) as c:
                for i in counter:
                    if time.monotonic() - started > args.max_seconds:
                        return
                    path, params, files, data, want = request_for(i, batch, tiny)
                    t = time.perf_counter()
                    r = c.post(path, params=params, files=files, data=data)
                    dt = time.perf_counter() - t
                    r.read()
                    with lock:
                        latencies.append(dt)
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                        if r.status_code != want and len(unexpected) < 20:
                            unexpected.append(f"#{i} {path} -> {r.status_code} {r.text[:120]}")
                        done["n"] += 1
                        n = done["n"]
                        if n == args.warmup:
                            baseline["rss"] = rss_bytes(proc.pid)
                        if n % args.sample == 0:
                            samples.append((n, rss_bytes(proc.pid)))

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss_end = rss_bytes(proc.pid)

    base = baseline["rss"] or rss_start
    post = [(n, r) for n, r in samples if n >= args.warmup]
    slope = None
    if len(post) >= 2:
        xs, ys = [n for n, _ in post], [r / MiB for _, r in post]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0
    server_errors = sum(v for k, v in statuses.items() if k >= 500)
    result = {
        "requests": done["n"], "clients": args.clients, "seconds": round(time.monotonic() - started, 1),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors_5xx": server_errors, "unexpected": unexpected,
        "rss_mib": {"after_start": round(rss_start / MiB, 1), "after_warmup": round(base / MiB, 1),
                    "end": round(rss_end / MiB, 1), "max": round(max([r for _, r in samples] + [rss_end]) / MiB, 1)},
        "rss_growth_after_warmup": round((rss_end - base) / base, 4),
        "rss_slope_mib_per_1000_requests": None if slope is None else round(slope, 2),
        "latency_s": {"p50": round(percentile(latencies, 0.5), 3), "p95": round(percentile(latencies, 0.95), 3),
                      "p99": round(percentile(latencies, 0.99), 3)},
        "rss_samples_mib": [[n, round(r / MiB, 1)] for n, r in samples],
        "load_average_end": os.getloadavg(),
        "pass": server_errors == 0 and not unexpected and (rss_end - base) / base < 0.05,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples_mib"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
