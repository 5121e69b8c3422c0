"""The on-disk cache of cleaned photos and their embeddings, shared by evaluations and benches.

Cleaned images are made by the batch engine (engines.batch: the same per-photo
step, worker pool and settings key as ``shelfready clean``) into a cache
folder named by that key (settings + hygiene code version), as lossless WebP
named by the photo's SHA-256, so a re-run or a second bench reuses them;
embeddings are cached beside them keyed by the image key and the embedder name::

    <cache_dir>/clean/<clean_key>/info.json                config, git commit, hygiene code version
    <cache_dir>/clean/<clean_key>/.shelfready-manifest.jsonl   status, reasons, model of each photo
    <cache_dir>/clean/<clean_key>/<sha[:2]>/<sha>.webp     cleaned image
    <cache_dir>/clean/<clean_key>/<sha[:2]>/<sha>.mask.png the remover's mask of the original photo
    <cache_dir>/emb/<embedder key>/<sha>.npy               one embedding

A photo that cannot be cleaned is reported, not cached, so the next run tries again.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.batch import run_batch
from engines.config import BatchConfig
from engines.job import BatchJob, mask_path
from hygiene.config import CleanConfig
from hygiene.version import code_version
from photos.config import OutputConfig
from photos.io import write_text_atomic
from photos.keys import file_sha256

from .config import EmbedConfig


def default_cache_dir() -> Path:
    base = os.environ.get("SHELFREADY_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / ("" if os.environ.get("SHELFREADY_CACHE") else "shelfready")


# --------------------------------------------------------------------------- cleaning cache

# cleaned photos are kept losslessly: the embedder sees exactly what clean() made
# with the remover's mask of each photo beside it (search.views composes embedding views from it)
CACHE_OUTPUT = OutputConfig(format="webp", webp_lossless=True, save_mask=True)


def _job(config: CleanConfig, cache_dir: Path, key: str, workers: int = 1) -> BatchJob:
    return BatchJob(None, Path(cache_dir) / "clean" / key, config, CACHE_OUTPUT, batch=BatchConfig(workers=workers))


def clean_key(config: CleanConfig) -> str:
    """The batch's settings key (settings + hygiene code version) of the cache's cleanups."""
    return _job(config, Path("."), "").fingerprint()


@dataclass
class Prepared:
    """One photo after loading (and cleaning): where its pixels are and what happened."""

    source: Path
    digest: str = ""
    image_path: Path | None = None  # file to embed: the original, or the cached cleaned image
    mask_path: Path | None = None  # the remover's mask of the original photo (cleaned photos)
    status: str = "raw"  # raw | cleaned | needs_review | failed
    reasons: list[str] = field(default_factory=list)
    model: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def _write_cache_info(folder: Path, config: CleanConfig) -> None:
    info = folder / "info.json"
    if info.is_file():
        return
    import subprocess
    import time

    import hygiene

    try:
        commit = subprocess.run(["git", "-C", str(Path(hygiene.__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    write_text_atomic(info, json.dumps({"clean_config": json.loads(config.fingerprint()), "git_commit": commit,
                                        "hygiene_code": code_version(),
                                        "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())},
                                       indent=2))


def cache_info(cache_dir: Path, key: str) -> dict:
    info = Path(cache_dir) / "clean" / key / "info.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def clean_photos(paths: Sequence[Path], config: CleanConfig, cache_dir: Path, workers: int = 1,
                 progress: bool = True, key: str | None = None) -> list[Prepared]:
    """Clean every photo once (cached) with the batch engine; returns where each cleaned image is.

    The cache folder is a batch output folder named by ``key`` (default: ``clean_key(config)``);
    its manifest says what is done, so a re-run or another evaluation reuses it. A photo that
    cannot be cleaned is reported, not recorded, so the next run tries again.
    """
    job = _job(config, cache_dir, key or clean_key(config), workers)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    _write_cache_info(job.out_dir, config)
    summary = run_batch(job, progress=progress, sources=list(paths), summary_files=False, wait_for_folder=True)
    if summary.interrupted:  # stopped by SIGINT/SIGTERM: what is done is recorded; stop as asked
        import signal
        import sys

        name = signal.Signals(summary.interrupted).name
        print(f"stopped by {name}: {summary.cleaned + summary.needs_review} photos cleaned and cached; "
              "run again to resume", file=sys.stderr)
        raise SystemExit(128 + summary.interrupted)
    rows = {r["rel"]: r for r in summary.rows}
    out: list[Prepared] = []
    for path in paths:
        try:
            digest = file_sha256(path)  # hashed again: the batch keys its rows by content
        except OSError as exc:
            out.append(Prepared(Path(path), status="failed", error=f"cannot read file: {exc.strerror}"))
            continue
        row = rows[f"{digest[:2]}/{digest}"]
        reasons = row.get("reasons") or []
        p = Prepared(Path(path), digest, status=row["status"], model=row.get("model", ""),
                     reasons=reasons if isinstance(reasons, list) else reasons.split("; "),
                     error=row.get("error", ""))
        p.image_path = job.out_dir / row["output"] if p.ok else None
        p.mask_path = mask_path(p.image_path) if p.ok else None
        out.append(p)
    return out


def raw_photos(paths: Sequence[Path]) -> list[Prepared]:
    out = []
    for path in paths:
        try:
            out.append(Prepared(Path(path), file_sha256(path), Path(path)))
        except OSError as exc:
            out.append(Prepared(Path(path), status="failed", error=f"cannot read file: {exc.strerror}"))
    return out


# --------------------------------------------------------------------------- embedding


def embedding_file(cache_dir: Path, embedder, tag: str, digest: str) -> Path:
    """Where a photo's embedding is cached: keyed by the embedder's name, its preprocessing's
    repr (sizes, crop, normalisation: same name, new transform, new key) and ``tag``."""
    preprocess = repr(getattr(embedder, "preprocess", ""))
    name_key = hashlib.sha256(f"{embedder.name}|{preprocess}|{tag}".encode()).hexdigest()[:16]
    return Path(cache_dir) / "emb" / name_key / f"{digest}.npy"


def embed_prepared(photos: Sequence[Prepared], embedder, cache_dir: Path | None, tag: str,
                   batch_size: int = EmbedConfig().batch_size, progress: bool = True,
                   loader=None) -> np.ndarray:
    """(n, d) float32 vectors of the usable photos (failed ones get a zero row and are marked).

    ``loader(photo) -> PIL image`` makes what is embedded (default: the file at
    ``image_path``); ``tag`` must then name what it makes (it keys the cache)."""
    from tqdm import tqdm

    from photos.io import load_image

    vecs = np.zeros((len(photos), embedder.dim), dtype=np.float32)

    def cache_file(p: Prepared) -> Path | None:
        return embedding_file(cache_dir, embedder, tag, p.digest) if cache_dir and p.digest else None

    todo = []
    for i, p in enumerate(photos):
        f = cache_file(p)
        if p.ok and f is not None and f.is_file():
            vecs[i] = np.load(f)
        elif p.ok:
            todo.append(i)
    bar = tqdm(total=len(todo), unit="photo", desc=f"embedding {tag}", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        chunk, images = [], []
        for i in todo[start:start + batch_size]:
            try:
                images.append(loader(photos[i]) if loader else load_image(photos[i].image_path))
                chunk.append(i)
            except ValueError as exc:
                photos[i].status, photos[i].error = "failed", str(exc)
        if images:
            out = np.asarray(embedder.embed(images), dtype=np.float32)
            for i, v in zip(chunk, out):
                vecs[i] = v
                f = cache_file(photos[i])
                if f is not None:
                    f.parent.mkdir(parents=True, exist_ok=True)
                    np.save(f, v)
        bar.update(len(todo[start:start + batch_size]))
    bar.close()
    return vecs
