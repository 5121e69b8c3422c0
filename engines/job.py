"""A batch job and its parts: the job (folders, settings, its settings key), one photo's task,
the summary, the statuses; what the planner, the engines and the recorder share."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from hygiene.config import CleanConfig
from hygiene.version import code_version
from photos import store
from photos.config import LoadLimits, OutputConfig
from photos.store import is_uri

from .config import BatchConfig

OK_STATUSES = ("cleaned", "needs_review")


WORKER_DIED = "worker died"


class BatchError(ValueError):
    """The batch cannot start or go on (unsafe folders, OUT not writable); one line."""


@dataclass(frozen=True)
class BatchJob:
    in_dir: Path | str | None  # a str: an object-store URI (photos.store)
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
        from photos.io import output_suffix

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


def _source_row(task: Task) -> dict:
    return {"etag": task.etag} if task.etag else {}
