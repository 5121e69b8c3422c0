"""A catalog built from Parquet shards of embeddings, without holding every vector in RAM.

Shards are Parquet files with the columns ``id, sku, label, path, content_hash,
vector`` (``vector``: a list of float32, L2-normalised, the same length in every
row), as ``catalog build --engine ray`` writes them or any Spark/Ray job of the
user's can. An optional ``error`` column marks rows whose photo could not be
embedded (they are reported, not added). ``shelfready-shards.json`` beside them
names the embedder; shards made elsewhere need it given.

The index type is chosen up front from the total row count (``auto``: as for a
catalog of that size). Trained types (``ivfpq``, ``binary``) are trained on a
seeded random sample of up to ``IndexConfig.train_max`` rows gathered from all
shards, then every other row is added shard by shard, ``chunk_rows`` at a time;
only the index (codes), the sample and one chunk are in memory. ``flat`` and
``hnsw`` hold exact vectors by nature, so they are as big as the vectors anyway.
The folder that comes out is an ordinary catalog (``search``, ``catalog add``,
``serve`` open it).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import EngineError, INSTALL_HINT

SIDECAR = "shelfready-shards.json"
COLUMNS = ("id", "sku", "label", "path", "content_hash", "vector")
TRAINED = ("ivfpq", "binary")


@dataclass
class ShardBuild:
    added: int = 0
    skipped: int = 0  # rows whose content hash was already in the catalog
    errors: list[str] = field(default_factory=list)
    index_type: str = ""


def _pq():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EngineError(f"reading Parquet shards needs pyarrow: {INSTALL_HINT}") from None
    return pq


def shard_files(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*.parquet") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise EngineError(f"no .parquet files under {folder}")
    return files


def read_sidecar(folder: Path) -> dict:
    path = Path(folder) / SIDECAR
    return json.loads(path.read_text()) if path.is_file() else {}


def _row_counts(files: list[Path]) -> list[int]:
    pq = _pq()
    counts = []
    for f in files:
        meta = pq.ParquetFile(f)
        names = set(meta.schema_arrow.names)
        missing = [c for c in ("vector",) if c not in names]
        if missing:
            raise EngineError(f"{f}: no {', '.join(missing)} column (need {', '.join(COLUMNS)})")
        counts.append(meta.metadata.num_rows)
    return counts


def _chunks(path: Path, rows: int) -> Iterator[dict]:
    """Column dicts of up to ``rows`` rows; ``vector`` a float32 (n, d) array (zeros where
    a row has none), ``valid`` whether a row has a vector and no error."""
    pq = _pq()
    pf = pq.ParquetFile(path)
    names = [c for c in (*COLUMNS, "error") if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=rows, columns=names):
        cols = {n: batch.column(n) for n in names}
        vec = cols.pop("vector")
        out = {n: c.to_pylist() for n, c in cols.items()}
        has = np.asarray(vec.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        flat = vec.filter(vec.is_valid()).flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        n = int(has.sum())
        dim = len(flat) // n if n else 0
        if n and dim * n != len(flat):
            raise EngineError(f"{path}: vectors of different lengths")
        full = np.zeros((len(has), dim), dtype=np.float32)
        if n:
            full[has] = flat.reshape(n, dim)
        out["vector"] = full
        errors = out.get("error")
        out["valid"] = has & np.array([not e for e in errors], dtype=bool) if errors is not None else has
        yield out


def _items(chunk: dict, keep: np.ndarray) -> list[dict]:
    return [{f: (chunk[f][i] if f in chunk else None) for f in ("sku", "label", "path", "content_hash")}
            for i in np.flatnonzero(keep)]


def build_from_parquet(folder: Path, out: Path, embedder: str | None = None, index_type: str = "auto",
                       config=None, chunk_rows: int = 65_536, on_chunk: Callable[[int], None] | None = None) -> ShardBuild:
    """Create the catalog ``out`` from the shards under ``folder``; see the module docstring."""
    from search import Catalog, IndexConfig
    from search.indexes import target_index_type

    cfg = config or IndexConfig()
    files = shard_files(folder)
    counts = _row_counts(files)
    side = read_sidecar(folder)
    name = embedder or side.get("embedder")
    if not name:
        raise EngineError(f"which embedder made the vectors in {folder}? give --embedder (no {SIDECAR} there)")
    total = sum(counts)
    kind, _ = target_index_type(index_type, total, cfg)
    sample = _train_rows(counts, kind, cfg)
    dim = _dim(files)
    if side.get("dim") and int(side["dim"]) != dim:
        raise EngineError(f"{folder}: vectors are {dim}-d but {SIDECAR} says {side['dim']}")
    cat = Catalog.create(out, name, dim, kind if kind in TRAINED else index_type, config=cfg, autosave=False)
    result = ShardBuild()
    seen: set[str] = set()

    def add(chunk: dict, keep: np.ndarray) -> None:
        for i in np.flatnonzero(~chunk["valid"] & keep):
            err = chunk.get("error", [None] * len(keep))[i] or "no vector"
            result.errors.append(f"{chunk['path'][i] if 'path' in chunk else i}: {err}")
        keep = keep & chunk["valid"]
        hashes = chunk.get("content_hash")
        if hashes is not None:  # a photo present twice is added once, as `catalog build` does
            for i in np.flatnonzero(keep):
                h = hashes[i]
                if h and (h in seen or cat.find_hash(h)):
                    keep[i] = False
                    result.skipped += 1
                elif h:
                    seen.add(h)
        if keep.any():
            result.added += len(cat.add(chunk["vector"][keep], _items(chunk, keep)))

    if sample is not None:  # first add = the training sample: the catalog trains its index on it
        picked = list(_gather(files, counts, sample, chunk_rows))
        merged = {k: (np.concatenate([c[k] for c in picked]) if isinstance(picked[0][k], np.ndarray)
                      else [v for c in picked for v in c[k]]) for k in picked[0]}
        del picked  # one copy of the sample, not two, while the index trains
        add(merged, np.ones(len(merged["valid"]), dtype=bool))
        del merged
    offset = 0
    for f, n in zip(files, counts):
        pos = 0
        for chunk in _chunks(f, chunk_rows):
            m = len(chunk["valid"])
            keep = np.ones(m, dtype=bool)
            if sample is not None:
                lo, hi = np.searchsorted(sample, [offset + pos, offset + pos + m])
                keep[sample[lo:hi] - offset - pos] = False  # already added with the sample
            add(chunk, keep)
            pos += m
            if on_chunk is not None:
                on_chunk(m)
        offset += n
    cat.save()
    result.index_type = cat.index_type
    return result


def _dim(files: list[Path]) -> int:
    for f in files:
        for chunk in _chunks(f, 1024):
            if chunk["valid"].any():
                return int(chunk["vector"].shape[1])
    raise EngineError(f"no row with a vector in {files[0].parent}")


def _train_rows(counts: list[int], kind: str, cfg) -> np.ndarray | None:
    """Sorted global row numbers of the training sample (trained index types only)."""
    if kind not in TRAINED:
        return None
    total = sum(counts)
    need = cfg.ivfpq_min_train if kind == "ivfpq" else cfg.binary_min_train
    size = max(min(cfg.train_max, total), min(need, total))
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(total, size, replace=False))


def _gather(files: list[Path], counts: list[int], rows: np.ndarray, chunk_rows: int) -> Iterator[dict]:
    """The chunks of the sample rows, read shard by shard."""
    offset = 0
    for f, n in zip(files, counts):
        lo, hi = np.searchsorted(rows, [offset, offset + n])
        if hi > lo:
            pos = 0
            for chunk in _chunks(f, chunk_rows):
                m = len(chunk["valid"])
                a, b = np.searchsorted(rows, [offset + pos, offset + pos + m])
                if b > a:
                    idx = rows[a:b] - offset - pos
                    yield {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for k, v in chunk.items()}
                pos += m
        offset += n
