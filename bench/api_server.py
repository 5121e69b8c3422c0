"""Shared by the API benches: start `shelfready serve` on 127.0.0.1 in a subprocess.

Only loopback traffic; the server is stopped (SIGTERM, then SIGKILL) on exit.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def serve(*args: str, ready_timeout: float = 300,
          code: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`shelfready serve ARGS` from this checkout, or from the checkout `code` (another version)."""
    port = free_port()
    cmd = [sys.executable, "-m", "cli.serve_cmd", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", *args]
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(Path(code).resolve())
    proc = subprocess.Popen(cmd, cwd=code or ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        with httpx.Client(base_url=url, timeout=5) as c:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server not ready in time")
                time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def photos(folder: Path = SAMPLES) -> list[tuple[str, bytes]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if not files:
        raise SystemExit(f"no photos in {folder}")
    return [(p.name, p.read_bytes()) for p in files]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
