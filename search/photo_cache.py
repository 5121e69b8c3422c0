"""The on-disk cache of cleaned photos and their embeddings, shared by evaluations and benches.

Cleaned images are cached on disk (lossless WebP + a JSON sidecar) keyed by
the photo's SHA-256, the CleanConfig fingerprint and a hash of the hygiene
source code, so a re-run or a second bench reuses them; embeddings are cached
beside them keyed by the image key and the embedder name::

    <cache_dir>/clean/<clean_key>/info.json                config, git commit, hygiene code hash
    <cache_dir>/clean/<clean_key>/<sha[:2]>/<sha>.webp     cleaned image (+ .json: status, reasons)
    <cache_dir>/emb/<embedder key>/<sha>.npy               one embedding

A photo that cannot be cleaned is reported, not cached, so the next run tries again.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hygiene.config import CleanConfig


def default_cache_dir() -> Path:
    base = os.environ.get("SHELFREADY_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / ("" if os.environ.get("SHELFREADY_CACHE") else "shelfready")


# --------------------------------------------------------------------------- cleaning cache


def hygiene_code_hash() -> str:
    """Hash of the hygiene package's source (but the batch runner, which clean() does not
    use): a code change invalidates cached cleanups."""
    import hygiene

    h = hashlib.sha256()
    for path in sorted(Path(hygiene.__file__).parent.glob("*.py")):
        if path.name == "batch.py":
            continue
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def clean_key(config: CleanConfig) -> str:
    text = config.fingerprint() + hygiene_code_hash()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Prepared:
    """One photo after loading (and cleaning): where its pixels are and what happened."""

    source: Path
    digest: str = ""
    image_path: Path | None = None  # file to embed: the original, or the cached cleaned image
    status: str = "raw"  # raw | cleaned | needs_review | failed
    reasons: list[str] = field(default_factory=list)
    model: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def _cache_paths(cache_dir: Path, key: str, digest: str) -> tuple[Path, Path]:
    folder = cache_dir / "clean" / key / digest[:2]
    return folder / f"{digest}.webp", folder / f"{digest}.json"


def _clean_one(path: Path, digest: str, config: CleanConfig, cache_dir: Path, key: str) -> dict:
    """Clean one photo into the cache; never raises (the error becomes the record)."""
    from hygiene import clean
    from hygiene.io import load_image, write_bytes_atomic, write_text_atomic

    img_path, meta_path = _cache_paths(cache_dir, key, digest)
    try:
        result = clean(load_image(path), config)
        import io

        buf = io.BytesIO()
        result.image.save(buf, "WEBP", lossless=True, quality=0, method=0)
        write_bytes_atomic(img_path, buf.getvalue())
        record = {"status": result.status, "reasons": result.reasons, "model": result.model,
                  "timings": result.timings, "error": ""}
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the evaluation
        msg = str(exc).splitlines()[0] if str(exc) else ""
        # not cached: a failure may be transient (out of memory, model file missing), so retry next run
        return {"status": "failed", "reasons": [], "model": "", "error": f"{type(exc).__name__}: {msg}"}
    write_text_atomic(meta_path, json.dumps(record))
    return record


def _write_cache_info(cache_dir: Path, key: str, config: CleanConfig) -> None:
    info = cache_dir / "clean" / key / "info.json"
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
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps({"clean_config": json.loads(config.fingerprint()), "git_commit": commit,
                                "hygiene_code": hygiene_code_hash(),
                                "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, indent=2))


def cache_info(cache_dir: Path, key: str) -> dict:
    info = Path(cache_dir) / "clean" / key / "info.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def clean_photos(paths: Sequence[Path], config: CleanConfig, cache_dir: Path, workers: int = 1,
                 progress: bool = True, key: str | None = None) -> list[Prepared]:
    """Clean every photo once (cached); returns where each cleaned image is.

    ``key`` pins an existing cache folder (default: ``clean_key(config)``).
    """
    from tqdm import tqdm

    key = key or clean_key(config)
    _write_cache_info(cache_dir, key, config)
    out: list[Prepared] = []
    todo = []
    for path in paths:
        try:
            digest = file_sha256(path)
        except OSError as exc:
            out.append(Prepared(Path(path), status="failed", error=f"cannot read: {exc.strerror}"))
            continue
        out.append(Prepared(Path(path), digest))
        if not _cache_paths(cache_dir, key, digest)[1].is_file():
            todo.append(len(out) - 1)
    bar = tqdm(total=len(todo), unit="photo", desc="cleaning", disable=not progress or not todo)
    args = [(out[i].source, out[i].digest, config, cache_dir, key) for i in todo]
    fresh: dict[int, dict] = {}
    if workers <= 1 or len(todo) <= 1:
        for i, a in zip(todo, args):
            fresh[i] = _clean_one(*a)
            bar.update(1)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for i, rec in zip(todo, pool.map(_clean_one, *zip(*args))):
                fresh[i] = rec
                bar.update(1)
    bar.close()
    for i, p in enumerate(out):
        if not p.digest:
            continue
        img_path, meta_path = _cache_paths(cache_dir, key, p.digest)
        rec = fresh[i] if i in fresh else json.loads(meta_path.read_text())
        p.status, p.reasons, p.model, p.error = rec["status"], rec["reasons"], rec["model"], rec["error"]
        p.image_path = img_path if p.ok else None
    return out


def raw_photos(paths: Sequence[Path]) -> list[Prepared]:
    out = []
    for path in paths:
        try:
            out.append(Prepared(Path(path), file_sha256(path), Path(path)))
        except OSError as exc:
            out.append(Prepared(Path(path), status="failed", error=f"cannot read: {exc.strerror}"))
    return out


# --------------------------------------------------------------------------- embedding


def embed_prepared(photos: Sequence[Prepared], embedder, cache_dir: Path | None, tag: str,
                   batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """(n, d) float32 vectors of the usable photos (failed ones get a zero row and are marked)."""
    from tqdm import tqdm

    from hygiene.io import load_image

    # the preprocessing's repr (sizes, crop, normalisation) is part of the key: same name, new transform
    preprocess = repr(getattr(embedder, "preprocess", ""))
    name_key = hashlib.sha256(f"{embedder.name}|{preprocess}|{tag}".encode()).hexdigest()[:16]
    vecs = np.zeros((len(photos), embedder.dim), dtype=np.float32)

    def cache_file(p: Prepared) -> Path | None:
        return cache_dir / "emb" / name_key / f"{p.digest}.npy" if cache_dir and p.digest else None

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
                images.append(load_image(photos[i].image_path))
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
