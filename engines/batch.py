"""THE per-photo clean-and-record step, and the batch around it.

Every caller that cleans photos in bulk (``shelfready clean``, the evaluation
cache, the benches, the cluster engine) goes through here:

* ``plan_batch(job)`` finds the photos, refuses unsafe folders (OUT that is IN,
  an output that would land on an input), and decides from the manifest which
  photos are already done;
* ``process_one(job, task)`` loads, cleans and saves one photo; it never raises
  (an error becomes the row);
* ``Recorder`` appends each finished photo to the manifest (JSON lines in OUT)
  and collects the summary rows; ``write_summary`` writes summary.json/csv;
* ``run_batch(job)`` runs the tasks on the local process pool (engines/pool.py).

Guarantees: originals are only read; every output is written to a temp file
and renamed; a re-run skips photos whose bytes and settings (including the
hygiene code version) match a manifest line; a photo that killed its worker
twice is recorded as failed and skipped until its bytes or the settings change.

IN and OUT may each be an object-store URI (``s3://bucket/prefix``, a str; a
local folder is a ``Path``): photos/store.py then lists, reads and writes
(one PUT per output, one record object per finished photo merged into the
manifest at the end, a leased lock object instead of flock). A photo read from
a URI is known by its ETag at planning (nothing is read twice) and by the
sha256 of its bytes in its record.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from photos import store
from photos.config import LoadLimits
from photos.keys import bytes_sha256, one_line, utf8_text
from photos.store import StoreError, is_uri

from . import records
from .job import OK_STATUSES, BatchError, BatchJob, BatchSummary, Task, _out_rel, _source_row, mask_path
from .plan import _check_folders, plan_batch, remove_stale_temp_files
from .recorder import Recorder, _prepare_out, write_summary

# --------------------------------------------------------------------------- one photo


def init_worker(threads: int) -> None:
    """The one worker set-up of every cleaning process: native thread pools sized explicitly
    (OpenCV, BLAS, OpenMP: removers.runtime.limit_threads)."""
    from removers.runtime import limit_threads

    limit_threads(threads)


def load_task(task: Task, limits: LoadLimits):
    """(the photo of ``task`` decoded, ``task`` with the sha256 of its bytes): a URI is read here,
    once, and hashed; a local file was hashed at planning."""
    from photos.io import load_image

    if not is_uri(task.src):
        return load_image(task.src, limits), task
    from photos.load_errors import FileTooLargeError, _fmt_bytes

    if task.size > limits.max_bytes:  # decided from the listing, nothing is read
        raise FileTooLargeError(f"file too large: {_fmt_bytes(task.size)} exceeds the "
                                f"{_fmt_bytes(limits.max_bytes)} limit")
    data = store.read(task.src)
    task = dataclasses.replace(task, digest=bytes_sha256(data))
    return load_image(data, limits), task


def _save(image, out: Path | str, fmt) -> None:
    """All or nothing: temp file + rename on disk, one PUT on an object store."""
    from photos.io import encode_image, save_image_atomic

    if is_uri(out):
        store.put(out, encode_image(image, fmt))
    else:
        save_image_atomic(image, out, fmt)


def process_one(job: BatchJob, task: Task, image=None, alpha=None) -> dict:
    """Load, clean and save one photo; never raises (errors become the row). ``image``/``alpha``:
    the photo already loaded and its remover mask already predicted (engines/batch_group.py; a
    URI's ``task`` then carries its digest, ``load_task``)."""
    from hygiene.pipeline import clean
    from photos.io import ImageLoadError
    from removers.models import ModelError

    row = {"rel": task.rel, "sha256": task.digest, "settings": job.fingerprint(), "output": "",
           "status": "failed", "error": "", "model": job.clean.model, "reasons": [], "ready": False,
           "failed_checks": "", "seconds": 0.0, **_source_row(task)}
    t = time.perf_counter()
    try:
        if image is None:
            image, task = load_task(task, job.limits)
            row["sha256"] = task.digest
        result = clean(image, job.clean, alpha)
        if job.output.save_mask:  # first: a present output then implies its mask
            from PIL import Image

            _save(Image.fromarray(result.mask, "L"), mask_path(task.out), "png")
        _save(result.image, task.out, job.output)
        row.update(status=result.status, output=utf8_text(_out_rel(job, task.out)),
                   model=result.model, reasons=result.reasons, ready=result.report["ready"],
                   failed_checks=",".join(result.report["failed"]),
                   checks={k: v["value"] for k, v in result.report["checks"].items()},
                   timings=result.timings)
    except (ImageLoadError, ModelError, ValueError, StoreError) as exc:
        row["error"] = utf8_text(one_line(exc))
    except OSError as exc:  # the output folder (full, read-only) or a file vanishing mid-read
        written = str(exc.filename or "").startswith(str(job.out_dir))
        row["error"] = utf8_text(f"cannot write {task.out.name}: {exc.strerror}" if written else one_line(exc))
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the batch
        row["error"] = utf8_text(f"{type(exc).__name__}: {one_line(exc)}")
    row["seconds"] = round(time.perf_counter() - t, 3)
    return row


def _process(args: tuple[BatchJob, Task]) -> dict:
    return process_one(*args)


# --------------------------------------------------------------------------- recording


def threads_per_worker(workers: int) -> int:
    from removers.runtime import given_cores

    return max(1, given_cores() // workers)


def with_threads(job: BatchJob, threads: int) -> BatchJob:
    """``job`` with ``threads`` model threads per worker, unless the caller chose a number."""
    if job.clean.runtime.threads:
        return job
    runtime = dataclasses.replace(job.clean.runtime, threads=threads)
    return dataclasses.replace(job, clean=dataclasses.replace(job.clean, runtime=runtime))


def run_with(execute, job: BatchJob, sources: Sequence[Path] | None = None, summary_files: bool = True,
             wait_for_folder: bool = False) -> BatchSummary:
    """The frame every engine runs in: OUT checked and locked, stale temp files removed, the plan,
    then ``execute(job, todo, summary) -> signal or 0`` records the photos it runs (``Recorder``),
    then the summary files. ``wait_for_folder``: wait while another run writes the same folder (a
    shared cache) instead of failing."""
    _check_folders(job)
    lock = _prepare_out(job, wait_for_folder)
    local = not is_uri(job.out_dir)  # an object store has no temp files: one PUT per object
    try:
        if local:
            remove_stale_temp_files(job.out_dir)
        start = time.perf_counter()
        todo, summary = plan_batch(job, sources)
        if todo:
            summary.interrupted = execute(job, todo, summary)
        if local:
            remove_stale_temp_files(job.out_dir)  # of workers killed while stopping
        summary.seconds = time.perf_counter() - start
        if summary_files:
            try:
                write_summary(job, summary)
                if not local:  # the photos' record objects into the manifest (one PUT)
                    records.RecordLog(job.out_file(job.batch.manifest_name)).merge()
            except StoreError as exc:
                raise BatchError(f"cannot write the summary: {exc}; the photos recorded are kept, "
                                 "run the same command again") from None
            except OSError as exc:
                raise BatchError(f"cannot write the summary in {utf8_text(str(job.out_dir))}: {exc.strerror}") from None
        return summary
    finally:
        lock.close()


def run_batch(job: BatchJob, progress: bool = True, sources: Sequence[Path] | None = None,
              summary_files: bool = True, wait_for_folder: bool = False, process=_process) -> BatchSummary:
    """Clean the photos of ``job`` (or ``sources``) into ``job.out_dir`` on the local process pool;
    see the module docstring and ``run_with``. ``process`` is the picklable per-photo step,
    ``(job, task) -> row``; only fault-injection tests and benches pass another one (that wraps
    ``process_one``)."""

    def execute(job: BatchJob, todo: list[Task], summary: BatchSummary) -> int:
        from tqdm import tqdm

        from removers.runtime import given_cores

        from .pool import run_pool

        workers = max(1, min(job.batch.workers or given_cores(), len(todo)))
        threads = threads_per_worker(workers)  # the cores shared among the workers
        job = with_threads(job, threads)
        bar = tqdm(total=len(todo), unit="photo", disable=not progress, desc="cleaning")

        def show(row: dict) -> None:
            if row["status"] not in OK_STATUSES:
                bar.write(f"error: {row['rel']}: {row['error']}", file=sys.stderr)
            bar.update(1)

        recorder = Recorder(job, summary, show)
        try:
            return run_pool(process, [(job, t) for t in todo], workers,
                            on_result=lambda _task, row: recorder.record(row),
                            on_death=lambda task, signum, code: recorder.died(task[1], signum, code),
                            initializer=init_worker, initargs=(threads,), grace=job.batch.stop_grace)
        finally:
            recorder.close()
            bar.close()

    return run_with(execute, job, sources, summary_files, wait_for_folder)
