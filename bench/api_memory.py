"""Peak memory of the API under worst-case photos: 16-bit RGBA PNGs just under the pixel limit.

    python -m bench.api_memory [--side 7745] [--concurrent 4] [--rounds 1] [--code DIR] [-- SERVE ARGS]

`shelfready serve` runs in a subprocess on 127.0.0.1 (from this checkout, or from the
checkout `--code DIR` to measure another version with the same client). The photo is
made here: a ~0.7 MB 7745x7745 16-bit RGBA PNG (60.0 MP, just under the 60 MP limit).
The RSS of the server process tree (/proc, every 20 ms) is reported:
  baseline  after warm-up: 2 x `--concurrent` sample-photo requests, `--concurrent` at once
            (concurrent inference grows onnxruntime's buffers once per worker, ~0.27 GiB
            for 2 workers whatever the photo: that is warm state, not photo memory)
  peak      highest sample while `--concurrent` worst-case photos are cleaned at once
  after     5 s after the last answer (then after another concurrent sample burst)
Targets (issue "data safety", item 10): peak <= 2.5 GiB, after within 10 % of baseline.
"""
from __future__ import annotations

import argparse
import struct
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from bench.api_server import SAMPLES, serve

GiB = 2 ** 30


def worst_case_png(side: int) -> bytes:
    """16-bit RGBA PNG, opaque, grey with a blue box: compresses to well under 1 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bg, fg = struct.pack(">4H", 60000, 60000, 60000, 65535), struct.pack(">4H", 9000, 20000, 40000, 65535)
    comp = zlib.compressobj(9)
    parts = []
    for y in range(side):
        x0, x1 = (side // 3, 2 * side // 3) if side // 4 <= y < 3 * side // 4 else (0, 0)
        parts.append(comp.compress(b"\x00" + bg * x0 + fg * (x1 - x0) + bg * (side - x1)))
    parts.append(comp.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.stop = pid, every, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(self.every)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=7745)
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="bursts of --concurrent photos")
    ap.add_argument("--code", type=Path, default=None, help="run the server from this checkout")
    ap.add_argument("serve_args", nargs="*", help="extra `shelfready serve` flags (after --)")
    args = ap.parse_args(argv)

    png = worst_case_png(args.side)
    sample = (SAMPLES / "dress.jpg").read_bytes()
    print(f"photo: {args.side}x{args.side} 16-bit RGBA PNG, {len(png) / 1e6:.2f} MB; "
          f"{args.concurrent} at once x {args.rounds}; server code: {args.code or 'this checkout'}")
    with serve(*args.serve_args, code=args.code) as (url, proc), httpx.Client(base_url=url, timeout=900) as c:
        def clean(data: bytes) -> int:
            return c.post("/v1/clean", files={"photo": ("p", data)}).status_code

        def burst(data: bytes, n: int) -> list[int]:
            with ThreadPoolExecutor(args.concurrent) as ex:
                return list(ex.map(clean, [data] * n))

        warm = [clean(sample)]
        sequential = tree_rss(proc.pid)
        warm += burst(sample, 2 * args.concurrent)
        time.sleep(2)
        baseline = tree_rss(proc.pid)
        sampler = Sampler(proc.pid)
        sampler.start()
        statuses: list[int] = []
        started = time.perf_counter()
        for _ in range(args.rounds):
            statuses += burst(png, args.concurrent)
        elapsed = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        time.sleep(5)
        after = tree_rss(proc.pid)
        settled = burst(sample, 2 * args.concurrent)
        time.sleep(2)
        after_more = tree_rss(proc.pid)

    growth = (after - baseline) / baseline
    print(f"warm-up statuses {warm}, worst-case statuses {statuses}, after {settled}; "
          f"{elapsed:.1f} s for the worst-case photos")
    print(f"after one sequential request {sequential / GiB:.2f} GiB; "
          f"baseline {baseline / GiB:.2f} GiB | peak {sampler.peak / GiB:.2f} GiB | "
          f"after {after / GiB:.2f} GiB ({growth:+.1%} vs baseline) | "
          f"after another sample burst {after_more / GiB:.2f} GiB ({(after_more - baseline) / baseline:+.1%})")
    ok = sampler.peak <= 2.5 * GiB and growth <= 0.10
    print(f"targets (peak <= 2.5 GiB, after within 10 %): {'met' if ok else 'NOT met'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
