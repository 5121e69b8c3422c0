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
* ``run_batch(job)`` runs the tasks on the local process pool (hygiene/pool.py).

Guarantees: originals are only read; every output is written to a temp file
and renamed; a re-run skips photos whose bytes and settings (including the
hygiene code version) match a manifest line; a photo that killed its worker
twice is recorded as failed and skipped until its bytes or the settings change.

IN and OUT may each be an object-store URI (``s3://bucket/prefix``, a str; a
local folder is a ``Path``): hygiene/store.py then lists, reads and writes
(one PUT per output, one record object per finished photo merged into the
manifest at the end, a leased lock object instead of flock). A photo read from
a URI is known by its ETag at planning (nothing is read twice) and by the
sha256 of its bytes in its record.
"""
from __future__ import annotations

import csv
import dataclasses
import fcntl
import hashlib
import io as _stdio
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import BatchConfig, CleanConfig, LoadLimits, OutputConfig
from . import store
from .keys import bytes_sha256, code_version, file_sha256, one_line, utf8_text
from .store import StoreError, is_uri

OK_STATUSES = ("cleaned", "needs_review")
WORKER_DIED = "worker died"


class BatchError(ValueError):
    """The batch cannot start or go on (unsafe folders, OUT not writable); one line."""


@dataclass(frozen=True)
class BatchJob:
    in_dir: Path | str | None  # a str: an object-store URI (hygiene.store)
    out_dir: Path | str
    clean: CleanConfig = CleanConfig()
    output: OutputConfig = OutputConfig()
    limits: LoadLimits = LoadLimits()
    batch: BatchConfig = BatchConfig()

    def __post_init__(self) -> None:
        # a transparent cut-out is written as png when jpg was asked for (the name and the bytes agree)
        object.__setattr__(self, "output", self.output.for_transparency(self.clean.transparent))

    def fingerprint(self) -> str:
        """Settings key: every setting that shapes an output, plus the hygiene code version."""
        output = {k: v for k, v in self.output.__dict__.items() if k != "save_mask"}  # a file beside, same pixels
        text = (self.clean.fingerprint() + json.dumps([output, self.limits.__dict__], sort_keys=True)
                + code_version())
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def out_path(self, rel: Path) -> Path | str:
        from .io import output_suffix

        if is_uri(self.out_dir):
            return store.join(self.out_dir, rel.with_suffix(output_suffix(self.output.format)).as_posix())
        return self.out_dir / rel.with_suffix(output_suffix(self.output.format))

    def out_file(self, name: str) -> Path | str:
        """OUT/name: a summary file, the manifest."""
        return store.join(self.out_dir, name) if is_uri(self.out_dir) else self.out_dir / name


def _out_rel(job: BatchJob, out: Path | str) -> str:
    return store.relative(out, job.out_dir) if is_uri(out) else str(out.relative_to(job.out_dir))


def mask_path(output: Path | str) -> Path | str:
    """Where ``OutputConfig.save_mask`` puts the mask of the photo whose output is ``output``."""
    if is_uri(output):
        return output.rsplit(".", 1)[0] + ".mask.png"
    return output.with_name(output.stem + ".mask.png")


@dataclass(frozen=True)
class Task:
    src: Path | str  # the photo to read (a str: an object-store URI)
    rel: str  # its name in the manifest and summary (utf8_text)
    out: Path | str  # where its output goes
    digest: str  # sha256 of its bytes ("" for a URI: its reader hashes them)
    etag: str = ""  # a URI's ETag when listed (what a re-run compares)
    size: int = -1  # a URI's size when listed


@dataclass
class BatchSummary:
    total: int = 0
    cleaned: int = 0
    needs_review: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    interrupted: int = 0  # the signal that stopped the batch, or 0
    rows: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted

    def counts(self) -> dict:
        return {"total": self.total, "cleaned": self.cleaned, "needs_review": self.needs_review,
                "failed": self.failed, "skipped": self.skipped, "seconds": round(self.seconds, 2),
                "not_run": self.total - self.cleaned - self.needs_review - self.failed - self.skipped}

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if row.get("skipped"):
            self.skipped += 1
        elif row["status"] in OK_STATUSES:
            setattr(self, row["status"], getattr(self, row["status"]) + 1)
        else:
            self.failed += 1


# --------------------------------------------------------------------------- planning


def _is_output_folder(folder: str, cfg: BatchConfig) -> bool:
    return os.path.isfile(os.path.join(folder, cfg.manifest_name))


def find_images(in_dir: Path, cfg: BatchConfig, exclude: Path | None = None) -> list[Path]:
    """Files under in_dir with an image extension, sorted, skipping hidden files, the
    folder ``exclude`` (however it is spelled) and any folder shelfready wrote (it
    holds a manifest): shelfready never cleans its own outputs."""
    skip = os.path.realpath(exclude) if exclude is not None else None
    found = []
    for root, dirs, files in os.walk(in_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(root, d)) != skip
                         and not _is_output_folder(os.path.join(root, d), cfg))
        for name in sorted(files):
            path = Path(root, name)
            if not name.startswith(".") and path.suffix.lower() in cfg.extensions and path.is_file():
                found.append(path)
    return sorted(found)


def remove_stale_temp_files(out_dir: Path) -> int:
    """Delete temp files a killed run left behind (io writes ``.<name>.<random>.tmp``)."""
    stale = [p for p in out_dir.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def read_manifest(path: Path | str) -> dict[str, dict]:
    """rel -> last finished record; a torn last line (killed writer) is ignored."""
    done: dict[str, dict] = {}
    if is_uri(path):
        return store.RecordLog(path).read()[0]
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        store.take_record(done, line)
    return done


def _finished(prev: dict | None, task: Task, settings: str, masks: bool = False, exists=None) -> bool:
    """Whether a manifest record already covers this task (same bytes, same settings).
    ``exists(out)``: whether an output is there (default: a local file)."""
    same = prev.get("etag") == task.etag if prev and task.etag else prev and prev.get("sha256") == task.digest
    if not same or prev.get("settings") != settings:
        return False
    if prev.get("status") in OK_STATUSES:
        exists = exists or (lambda p: p.is_file())
        return exists(task.out) and (not masks or exists(mask_path(task.out)))
    return str(prev.get("error", "")).startswith(WORKER_DIED)  # it would kill a worker again


def _check_folders(job: BatchJob) -> None:
    if job.in_dir is None:
        return
    if is_uri(job.in_dir) or is_uri(job.out_dir):
        if is_uri(job.in_dir) and is_uri(job.out_dir) and store.inside(job.out_dir, job.in_dir):
            what = "is the input prefix" if job.out_dir == job.in_dir else "is inside the input prefix"
            raise BatchError(f"output {job.out_dir} {what} {job.in_dir}: refusing to write next to the "
                             "originals; choose an OUT_DIR outside IN_DIR")
        if not is_uri(job.in_dir) and not job.in_dir.is_dir():
            raise BatchError(f"input folder not found: {utf8_text(str(job.in_dir))}")
        return
    if not job.in_dir.is_dir():
        raise BatchError(f"input folder not found: {utf8_text(str(job.in_dir))}")
    if os.path.realpath(job.out_dir) == os.path.realpath(job.in_dir):
        raise BatchError(f"output folder {utf8_text(str(job.out_dir))} is the input folder: refusing to write "
                         "over the originals; choose another OUT_DIR")


def _tasks_of_folder(job: BatchJob) -> Iterable[tuple[Path | store.Entry, str, Path | str]]:
    if is_uri(job.in_dir):
        yield from _tasks_of_prefix(job)
        return
    exclude = None if is_uri(job.out_dir) else job.out_dir
    for src in find_images(job.in_dir, job.batch, exclude=exclude):
        rel = src.relative_to(job.in_dir)
        yield src, utf8_text(str(rel)), job.out_path(rel)


def _tasks_of_prefix(job: BatchJob) -> Iterable[tuple[store.Entry, str, str]]:
    """The photos under an IN that is a URI: image extensions, no hidden names, nothing below a
    prefix holding a shelfready manifest (an earlier OUT)."""
    try:
        entries = store.list_files(job.in_dir)
    except StoreError as exc:
        raise BatchError(str(exc)) from None
    rels = [(e, store.relative(e.uri, job.in_dir)) for e in entries]
    outputs = {rel.rsplit("/", 1)[0] for _, rel in rels if rel.rsplit("/", 1)[-1] == job.batch.manifest_name}
    for entry, rel in rels:
        parts = rel.split("/")
        if (any(p.startswith(".") for p in parts) or Path(parts[-1]).suffix.lower() not in job.batch.extensions
                or any("/".join(parts[:i]) in outputs for i in range(1, len(parts)))):
            continue
        yield entry, utf8_text(rel), job.out_path(Path(rel))


def _tasks_of_files(job: BatchJob, sources: Sequence[Path | str]) -> Iterable[tuple[Path | str, str | None, None]]:
    for src in sources:  # content-addressed outputs: named by the hash of the photo's bytes
        yield (src if is_uri(src) else Path(src)), None, None


def _output_lister(job: BatchJob):
    """``exists(out)`` for planning: one listing of OUT when it is a URI."""
    if not is_uri(job.out_dir):
        return None
    try:
        present = {e.uri for e in store.list_files(job.out_dir, must_exist=False)}
    except StoreError as exc:
        raise BatchError(str(exc)) from None
    return present.__contains__


def _source_key(src) -> str:
    return src.uri if isinstance(src, store.Entry) else src if is_uri(src) else os.path.realpath(src)


def plan_batch(job: BatchJob, sources: Sequence[Path] | None = None) -> tuple[list[Task], BatchSummary]:
    """The photos still to do, and a summary holding the ones skipped or unreadable.

    With ``sources`` the given files are cleaned (outputs named ``<sha[:2]>/<sha>``
    by their content) instead of scanning ``job.in_dir``.
    """
    _check_folders(job)
    settings = job.fingerprint()
    try:
        manifest = read_manifest(job.out_file(job.batch.manifest_name))
    except StoreError as exc:
        raise BatchError(str(exc)) from None
    exists = _output_lister(job)
    summary = BatchSummary()
    tasks: list[Task] = []
    items = list(_tasks_of_folder(job) if sources is None else _tasks_of_files(job, sources))
    inputs = {_source_key(src) for src, _, _ in items} if sources is None else set()
    for src, rel, out in items:
        summary.total += 1
        etag, size = "", -1
        try:
            if isinstance(src, store.Entry):  # listed under a URI IN: its reader hashes it
                digest, etag, size, src = "", src.etag, src.size, src.uri
            elif is_uri(src):  # a URI source named by its content: read here
                digest = bytes_sha256(store.read(src))
            else:
                digest = file_sha256(src)
        except OSError as exc:
            error = str(exc) if isinstance(exc, StoreError) else f"cannot read file: {exc.strerror}"
            summary.add({"rel": rel or utf8_text(str(src)), "status": "failed", "error": utf8_text(error)})
            continue
        if rel is None:
            rel = f"{digest[:2]}/{digest}"
            out = job.out_path(Path(rel))
        if (out if is_uri(out) else os.path.realpath(out)) in inputs:
            raise BatchError(f"output {utf8_text(str(out))} would overwrite the input photo "
                             f"{utf8_text(str(src))}: choose an OUT_DIR outside the input folder")
        task = Task(src if is_uri(src) else Path(src), rel, out, digest, etag, size)
        prev = manifest.get(rel)
        if _finished(prev, task, settings, job.output.save_mask, exists):
            summary.add({**prev, "skipped": True})
        else:
            tasks.append(task)
    return tasks, summary


# --------------------------------------------------------------------------- one photo


def init_worker(threads: int) -> None:
    """The one worker set-up of every cleaning process: native thread pools sized explicitly
    (OpenCV, BLAS, OpenMP: hygiene.runtime.limit_threads)."""
    from .runtime import limit_threads

    limit_threads(threads)


def load_task(task: Task, limits: LoadLimits):
    """(the photo of ``task`` decoded, ``task`` with the sha256 of its bytes): a URI is read here,
    once, and hashed; a local file was hashed at planning."""
    from .io import load_image

    if not is_uri(task.src):
        return load_image(task.src, limits), task
    from .load_errors import FileTooLargeError, _fmt_bytes

    if task.size > limits.max_bytes:  # decided from the listing, nothing is read
        raise FileTooLargeError(f"file too large: {_fmt_bytes(task.size)} exceeds the "
                                f"{_fmt_bytes(limits.max_bytes)} limit")
    data = store.read(task.src)
    task = dataclasses.replace(task, digest=bytes_sha256(data))
    return load_image(data, limits), task


def _save(image, out: Path | str, fmt) -> None:
    """All or nothing: temp file + rename on disk, one PUT on an object store."""
    from .io import encode_image, save_image_atomic

    if is_uri(out):
        store.put(out, encode_image(image, fmt))
    else:
        save_image_atomic(image, out, fmt)


def _source_row(task: Task) -> dict:
    return {"etag": task.etag} if task.etag else {}


def process_one(job: BatchJob, task: Task, image=None, alpha=None) -> dict:
    """Load, clean and save one photo; never raises (errors become the row). ``image``/``alpha``:
    the photo already loaded and its remover mask already predicted (hygiene/batch_group.py; a
    URI's ``task`` then carries its digest, ``load_task``)."""
    from .io import ImageLoadError
    from .models import ModelError
    from .pipeline import clean

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


class Recorder:
    """Appends finished photos to the manifest and collects the summary rows.

    On an OUT that is a URI the rows go, in order, to one writer thread that PUTs each record and
    then counts the row, so the engine's loop (which hands out the next photo) never waits for the
    store; ``close`` waits for it (every engine calls it before the summary is written). A driver
    killed meanwhile loses at most the records not yet PUT: those photos are done again."""

    def __init__(self, job: BatchJob, summary: BatchSummary, on_row=None) -> None:
        self.job, self.summary, self.on_row = job, summary, on_row
        self.path = job.out_file(job.batch.manifest_name)
        self.records = store.RecordLog(self.path) if is_uri(self.path) else None
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
    from .io import write_text_atomic

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


# --------------------------------------------------------------------------- the local engine


class _LeaseHandle:
    """``_prepare_out``'s lock of an OUT on an object store (``close`` releases it)."""

    def __init__(self, lease: store.Lease) -> None:
        self.lease = lease

    def close(self) -> None:
        self.lease.release()


def _prepare_out(job: BatchJob, wait: bool):
    """Create OUT, prove it writable, and hold its manifest locked (one batch per folder at a
    time: a second one fails at once, or with ``wait`` waits its turn). An OUT on an object store:
    its lease (hygiene.store.Lease), whose conditional PUT also proves it writable."""
    if is_uri(job.out_dir):
        lease = store.Lease(job.out_dir, job.batch.lock_lease)
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


def threads_per_worker(workers: int) -> int:
    from .runtime import given_cores

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
                    store.RecordLog(job.out_file(job.batch.manifest_name)).merge()
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

        from .pool import run_pool

        from .runtime import given_cores

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
