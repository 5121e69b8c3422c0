"""Folder in -> folder out: parallel, resumable, one manifest line per finished photo.

* The output tree mirrors the input tree; originals are only read.
* Every output is written to a temp file and renamed, so a kill leaves no half files.
* The manifest (JSON lines in the output folder) records each finished photo
  with the hash of its bytes and of the settings; a re-run skips those, so an
  interrupted batch resumes and nothing is processed twice.
* A bad file is one row with a one-line error; the batch goes on.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io as _stdio
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .config import BatchConfig, CleanConfig, LoadLimits, OutputConfig

OK_STATUSES = ("cleaned", "needs_review")


@dataclass(frozen=True)
class BatchJob:
    in_dir: Path
    out_dir: Path
    clean: CleanConfig = CleanConfig()
    output: OutputConfig = OutputConfig()
    limits: LoadLimits = LoadLimits()
    batch: BatchConfig = BatchConfig()

    def fingerprint(self) -> str:
        text = self.clean.fingerprint() + json.dumps([self.output.__dict__, self.limits.__dict__], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def out_path(self, rel: Path) -> Path:
        from .io import output_suffix

        fmt = "png" if self.clean.transparent and self.output.format == "jpg" else self.output.format
        return self.out_dir / rel.with_suffix(output_suffix(fmt))


@dataclass
class BatchSummary:
    total: int = 0
    cleaned: int = 0
    needs_review: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def counts(self) -> dict:
        return {"total": self.total, "cleaned": self.cleaned, "needs_review": self.needs_review,
                "failed": self.failed, "skipped": self.skipped, "seconds": round(self.seconds, 2)}


def find_images(in_dir: Path, cfg: BatchConfig, exclude: Path | None = None) -> list[Path]:
    """Files under in_dir with an image extension, sorted, skipping hidden files."""
    found = []
    for path in sorted(in_dir.rglob("*")):
        if exclude is not None and exclude in path.parents:
            continue
        if path.is_file() and path.suffix.lower() in cfg.extensions and not path.name.startswith("."):
            found.append(path)
    return found


def remove_stale_temp_files(out_dir: Path) -> int:
    """Delete temp files a killed run left behind (io writes ``.<name>.<random>.tmp``)."""
    stale = [p for p in out_dir.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[str, dict]:
    """rel path -> last finished record; a torn last line (killed writer) is ignored."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "rel" in rec:
            done[rec["rel"]] = rec
    return done


def _append_manifest(path: Path, record: dict) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _init_worker(threads: int) -> None:
    import cv2

    cv2.setNumThreads(threads)


def process_one(job: BatchJob, src: Path, rel: Path, digest: str) -> dict:
    """Load, clean and save one photo; never raises (errors become the row)."""
    from .io import ImageLoadError, load_image, save_image_atomic
    from .models import ModelError
    from .pipeline import clean

    row = {"rel": str(rel), "sha256": digest, "settings": job.fingerprint(), "output": "",
           "status": "failed", "error": "", "model": job.clean.model, "reasons": "", "ready": False,
           "failed_checks": "", "seconds": 0.0}
    t = time.perf_counter()
    try:
        image = load_image(src, job.limits)
        result = clean(image, job.clean)
        target = job.out_path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_image_atomic(result.image, target, job.output)
        row.update(status=result.status, output=str(target.relative_to(job.out_dir)), model=result.model,
                   reasons="; ".join(result.reasons), ready=result.report["ready"],
                   failed_checks=",".join(result.report["failed"]),
                   checks={k: v["value"] for k, v in result.report["checks"].items()},
                   timings=result.timings)
    except (ImageLoadError, ModelError, ValueError, OSError) as exc:
        row["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the batch
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    row["seconds"] = round(time.perf_counter() - t, 3)
    return row


def _tasks(job: BatchJob, summary: BatchSummary, manifest: dict[str, dict]):
    fp = job.fingerprint()
    for src in find_images(job.in_dir, job.batch, exclude=job.out_dir):
        rel = src.relative_to(job.in_dir)
        summary.total += 1
        try:
            digest = file_hash(src)
        except OSError as exc:
            summary.failed += 1
            summary.rows.append({"rel": str(rel), "status": "failed", "error": f"cannot read: {exc.strerror}"})
            continue
        prev = manifest.get(str(rel))
        if (prev and prev.get("sha256") == digest and prev.get("settings") == fp
                and prev.get("status") in OK_STATUSES and (job.out_dir / prev.get("output", "")).is_file()):
            summary.skipped += 1
            summary.rows.append({**prev, "skipped": True})
            continue
        yield src, rel, digest


def run_batch(job: BatchJob, progress: bool = True) -> BatchSummary:
    """Clean every photo under job.in_dir into job.out_dir; see module docstring."""
    from tqdm import tqdm

    if not job.in_dir.is_dir():
        raise ValueError(f"input folder not found: {job.in_dir}")
    job.out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(job.out_dir)
    manifest_path = job.out_dir / job.batch.manifest_name
    summary = BatchSummary()
    start = time.perf_counter()
    todo = list(_tasks(job, summary, read_manifest(manifest_path)))
    workers = job.batch.workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(todo) or 1))
    if job.clean.runtime.threads == 0:  # share the cores among the workers
        runtime = dataclasses.replace(job.clean.runtime, threads=_threads_per_worker(workers))
        job = dataclasses.replace(job, clean=dataclasses.replace(job.clean, runtime=runtime))
    bar = tqdm(total=len(todo), unit="photo", disable=not progress, desc="cleaning")

    def record(row: dict) -> None:
        summary.rows.append(row)
        if row["status"] in OK_STATUSES:
            setattr(summary, row["status"], getattr(summary, row["status"]) + 1)
            _append_manifest(manifest_path, row)
        else:
            summary.failed += 1
            bar.write(f"error: {row['rel']}: {row['error']}")
        bar.update(1)

    if workers == 1:
        _init_worker(_threads_per_worker(1))
        for src, rel, digest in todo:
            record(process_one(job, src, rel, digest))
    else:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(_threads_per_worker(workers),)) as pool:
            futures = [pool.submit(process_one, job, *t) for t in todo]
            for fut in futures:
                record(fut.result())
    bar.close()
    summary.seconds = time.perf_counter() - start
    write_summary(job, summary)
    return summary


def write_summary(job: BatchJob, summary: BatchSummary) -> None:
    from .io import write_text_atomic

    payload = {"counts": summary.counts(), "settings": json.loads(job.clean.fingerprint()),
               "output_format": job.output.format, "photos": summary.rows}
    write_text_atomic(job.out_dir / job.batch.summary_json, json.dumps(payload, indent=2, default=str))
    cols = ["rel", "status", "output", "error", "reasons", "ready", "failed_checks", "model", "seconds", "skipped"]
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for row in summary.rows:
        writer.writerow(row)
    write_text_atomic(job.out_dir / job.batch.summary_csv, buf.getvalue())
