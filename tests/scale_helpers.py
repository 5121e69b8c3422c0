"""Helpers of the Ray engine tests: run the CLI, read and compare what a batch left in OUT."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ".shelfready-manifest.jsonl"
NODES = ".shelfready-nodes.jsonl"
TIMING = ("seconds", "timings", "etag")  # differ between any two runs, of either engine (etag: URI sources)
SIZE = "256"


def photos(sample_paths, dst: Path, n: int) -> Path:
    dst.mkdir(parents=True)
    for p in sample_paths[:n]:
        shutil.copy(p, dst / p.name)
    return dst


def clean_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cli", "clean", str(src), str(out), "--size", SIZE, "--quiet", *extra]


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def manifest_rels(out: Path) -> list[str]:
    lines = (out / MANIFEST).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["rel"] for line in lines if line.strip()]


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").count("\n") >= n:
            return
        assert proc.poll() is None, f"the run ended before {n} photos were recorded: {proc.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} lines in {path} after {timeout} s")


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def outcome(out: Path) -> dict:
    """Everything a batch leaves in OUT, less the run's timings: output bytes, manifest,
    summary.json and summary.csv (rows by name: the order of completion is the scheduler's)."""
    files = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(out.rglob("*")) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(out).parts)
             and p.name not in ("summary.json", "summary.csv")}
    manifest = sorted((_strip(json.loads(line)) for line in (out / MANIFEST).read_text().splitlines()),
                      key=lambda r: r["rel"])
    summary = json.loads((out / "summary.json").read_text())
    summary["counts"].pop("seconds")
    summary["photos"] = sorted((_strip(r) for r in summary["photos"]), key=lambda r: r["rel"])
    with (out / "summary.csv").open(newline="") as fh:
        table = sorted((_strip(r) for r in csv.DictReader(fh)), key=lambda r: r["rel"])
    return {"files": files, "manifest": manifest, "summary": summary, "csv": table}


def exactly_once(out: Path, names: list[str]) -> None:
    """Every photo once in the manifest and in the summary, each with its output file."""
    counts = Counter(manifest_rels(out))
    assert counts == Counter(names), f"manifest: {counts}"
    rows = json.loads((out / "summary.json").read_text())["photos"]
    assert Counter(r["rel"] for r in rows) == Counter(names)
    assert all(r["status"] in ("cleaned", "needs_review") for r in rows), rows
    for name in names:
        assert (out / name).is_file(), name
    assert not [p for p in out.rglob(".*.tmp")], "temp files left behind"


def nodes_of(out: Path) -> Counter:
    lines = (out / NODES).read_text(encoding="utf-8").splitlines()
    return Counter(json.loads(line)["node"] for line in lines)


def gpu_notes(out: Path) -> Path:
    """Where ``clean_on_cpu_noting_the_gpu`` writes its notes for a job writing to ``out``."""
    return out.with_name(out.name + "-gpu-notes")


def clean_on_cpu_noting_the_gpu(args) -> dict:
    """The per-photo step of a cuda job on a machine without a GPU: the real step on the CPU, and
    a note of what Ray gave the actor that ran it (its GPU ids, actor id, process) beside OUT."""
    import dataclasses
    import os

    import ray

    from engines.batch import process_one

    job, task = args
    ctx = ray.get_runtime_context()
    notes = gpu_notes(job.out_dir)
    notes.mkdir(exist_ok=True)
    (notes / f"{task.rel}.json").write_text(json.dumps({
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "actor": ctx.get_actor_id(), "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}))
    cpu = dataclasses.replace(job.clean, runtime=dataclasses.replace(job.clean.runtime, device="cpu"))
    return process_one(dataclasses.replace(job, clean=cpu), task)
