"""Recording a batch: each finished photo appended to the manifest as it comes (one object per
photo on an object store), the summary files, and OUT's lock (one batch per folder at a time)."""
from __future__ import annotations

import csv
import fcntl
import io as _stdio
import json
import os
from pathlib import Path

from hygiene.version import code_version
from photos import store
from photos.keys import one_line, utf8_text
from photos.store import StoreError, is_uri

from . import records
from .job import OK_STATUSES, WORKER_DIED, BatchError, BatchJob, BatchSummary, Task, _source_row


class Recorder:
    """Appends finished photos to the manifest and collects the summary rows.

    On an OUT that is a URI the rows go, in order, to one writer thread that PUTs each record and
    then counts the row, so the engine's loop (which hands out the next photo) never waits for the
    store; ``close`` waits for it (every engine calls it before the summary is written). A driver
    killed meanwhile loses at most the records not yet PUT: those photos are done again."""

    def __init__(self, job: BatchJob, summary: BatchSummary, on_row=None) -> None:
        self.job, self.summary, self.on_row = job, summary, on_row
        self.path = job.out_file(job.batch.manifest_name)
        self.records = records.RecordLog(self.path) if is_uri(self.path) else None
        self._queue = None
        if self.records is not None:
            import queue
            import threading

            self._queue = queue.SimpleQueue()
            self._writer = threading.Thread(target=self._write_all, name="shelfready-records", daemon=True)
            self._writer.start()

    def _write_all(self) -> None:
        while (row := self._queue.get()) is not None:
            try:
                self._record(row)
            except Exception as exc:  # noqa: BLE001 - never lose the row from the summary
                self.summary.add({**row, "status": "failed", "error": f"not recorded: {one_line(exc)}"})

    def close(self) -> None:
        """Wait until every row given to ``record`` is recorded and counted."""
        if self._queue is not None:
            self._queue.put(None)
            self._writer.join()
            self._queue = None

    def record(self, row: dict) -> None:
        if self._queue is not None:
            self._queue.put(row)
        else:
            self._record(row)

    def _record(self, row: dict) -> None:
        if row["status"] in OK_STATUSES or str(row.get("error", "")).startswith(WORKER_DIED):
            if self.records is not None:  # one object per photo: written whole, a re-record replaces it
                try:
                    self.records.write(row)
                except StoreError as exc:  # not recorded: failed here, done again by the next run
                    row = {**row, "status": "failed", "output": "",
                           "error": f"not recorded (the next run does it again): {exc}"}
            else:
                line = json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n"
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
        self.summary.add(row)
        if self.on_row is not None:
            self.on_row(row)

    def died(self, task: Task, signum: int, code: int | None) -> dict:
        import signal

        what = f"signal {signum} ({signal.Signals(signum).name})" if signum else f"exit code {code}"
        row = {"rel": task.rel, "sha256": task.digest, "settings": self.job.fingerprint(), "output": "",
               "status": "failed", "error": f"{WORKER_DIED}: {what}", "model": self.job.clean.model,
               "reasons": [], "ready": False, "failed_checks": "", "seconds": 0.0, **_source_row(task)}
        self.record(row)
        return row


def _write_text(target: Path | str, text: str) -> None:
    from photos.io import write_text_atomic

    if is_uri(target):
        store.put(target, text.encode("utf-8"))
    else:
        write_text_atomic(target, text)


def write_summary(job: BatchJob, summary: BatchSummary) -> None:
    payload = {"counts": summary.counts(), "interrupted": summary.interrupted,
               "settings": json.loads(job.clean.fingerprint()), "code_version": code_version(),
               "output_format": job.output.format, "photos": summary.rows}
    _write_text(job.out_file(job.batch.summary_json), json.dumps(payload, indent=2, default=str))
    cols = ["rel", "status", "output", "error", "reasons", "ready", "failed_checks", "model", "seconds", "skipped"]
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for row in summary.rows:
        reasons = row.get("reasons", "")
        writer.writerow({**row, "reasons": "; ".join(reasons) if isinstance(reasons, list) else reasons})
    _write_text(job.out_file(job.batch.summary_csv), buf.getvalue())


class _LeaseHandle:
    """``_prepare_out``'s lock of an OUT on an object store (``close`` releases it)."""

    def __init__(self, lease: records.Lease) -> None:
        self.lease = lease

    def close(self) -> None:
        self.lease.release()


def _prepare_out(job: BatchJob, wait: bool):
    """Create OUT, prove it writable, and hold its manifest locked (one batch per folder at a
    time: a second one fails at once, or with ``wait`` waits its turn). An OUT on an object store:
    its lease (photos.records.Lease), whose conditional PUT also proves it writable."""
    if is_uri(job.out_dir):
        lease = records.Lease(job.out_dir, job.batch.lock_lease)
        try:
            lease.acquire(wait)
        except StoreError as exc:
            raise BatchError(str(exc)) from None
        return _LeaseHandle(lease)
    try:
        job.out_dir.mkdir(parents=True, exist_ok=True)
        fh = (job.out_dir / job.batch.manifest_name).open("a", encoding="utf-8")
    except OSError as exc:
        raise BatchError(f"cannot write to {utf8_text(str(job.out_dir))}: {exc.strerror}") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise BatchError(f"{utf8_text(str(job.out_dir))} is being written by another shelfready run; "
                         "wait for it or choose another OUT_DIR") from None
    return fh
