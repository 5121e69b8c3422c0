"""Planning a batch: the photos under IN (a folder or an object-store prefix) or given as files,
minus the ones the manifest records as done with the same bytes and settings key."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from photos import store
from photos.keys import bytes_sha256, file_sha256, utf8_text
from photos.store import StoreError, is_uri

from . import records
from .config import BatchConfig
from .job import OK_STATUSES, WORKER_DIED, BatchError, BatchJob, BatchSummary, Task, mask_path


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
        return records.RecordLog(path).read()[0]
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        records.take_record(done, line)
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
