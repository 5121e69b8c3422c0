"""A catalog built from Parquet shards of embeddings, without holding every vector in RAM.

Shards are Parquet files with the columns ``id, sku, label, path, content_hash,
vector`` (``vector``: a list of float32, L2-normalised, the same length in every
row), as ``catalog build --engine ray`` writes them or any Spark/Ray job of the
user's can. An optional ``error`` column marks rows whose photo could not be
embedded (they are reported, not added). ``shelfready-shards.json`` beside them
names the embedder; shards made elsewhere need it given.

The index type is chosen up front from the total row count (``auto``: as for a
catalog of that size). Trained types (``ivfpq``, ``binary``) are trained first
(``Catalog.create_trained``) on a seeded random sample of up to
``IndexConfig.train_max`` rows gathered from the shards into one float16 array
(the rows an in-memory ``add`` of all of them draws, when every row has a vector
and no photo repeats); then every row is added in order, shard by shard,
``chunk_rows`` at a time, so ids and items are those of the in-memory build. In
memory at once: the sample while the index trains (freed before the adds), then
the index (codes and ids) and one row group of one shard as Arrow decodes it
(write shards with row groups of a few tens of MB, as Spark's 128 MB blocks
are); the item table being filled is a temporary file (``create_trained``). ``flat`` and ``hnsw`` hold exact
vectors by nature, so they are as big as the vectors anyway. The folder that
comes out is an ordinary catalog (``search``, ``catalog add``, ``serve`` open
it).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines import INSTALL_HINT, EngineError
from engines.config import RayConfig
from engines.embed_engine import SIDECAR

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


def shard_files(folder: Path | str) -> list[Path] | list[str]:
    from photos import store

    if store.is_uri(folder):  # shards in an object store: read with ranged GETs (_parquet_file)
        try:
            files = [e.uri for e in store.list_files(folder) if e.uri.endswith(".parquet")
                     and not any(p.startswith(".") for p in store.relative(e.uri, folder).split("/"))]
        except store.StoreError as exc:
            raise EngineError(str(exc)) from None
    else:
        files = sorted(p for p in Path(folder).rglob("*.parquet") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise EngineError(f"no .parquet files under {folder}")
    return files


def read_sidecar(folder: Path | str) -> dict:
    from photos import store

    if store.is_uri(folder):
        try:
            return json.loads(store.read(store.join(folder, SIDECAR)))
        except store.StoreError as exc:
            if str(exc).endswith(": not found"):
                return {}
            raise EngineError(str(exc)) from None
    path = Path(folder) / SIDECAR
    return json.loads(path.read_text()) if path.is_file() else {}


def _parquet_file(path, **kwargs):
    """``pq.ParquetFile`` of a local shard or of one in an object store (photos.store)."""
    from photos import store

    if store.is_uri(path):
        try:
            return _pq().ParquetFile(store.open_input(path), **kwargs)
        except store.StoreError as exc:
            raise EngineError(str(exc)) from None
    return _pq().ParquetFile(path, **kwargs)


def _row_counts(files: list[Path]) -> list[int]:
    counts = []
    for f in files:
        meta = _parquet_file(f)
        names = set(meta.schema_arrow.names)
        missing = [c for c in ("vector",) if c not in names]
        if missing:
            raise EngineError(f"{f}: no {', '.join(missing)} column (need {', '.join(COLUMNS)})")
        counts.append(meta.metadata.num_rows)
    return counts


def _chunks(path: Path, rows: int, columns: tuple[str, ...] = COLUMNS) -> Iterator[dict]:
    """Column dicts of up to ``rows`` rows of ``columns`` (and ``error`` when the shard has it);
    ``vector`` a float32 (n, d) array (a view of Arrow's buffer when no row lacks one, else zeros
    where a row has none), ``valid`` whether a row has a vector and no error. One row group is
    decoded at a time (a few times its size while Arrow decodes a list column) and given back to
    the OS before the next: ``iter_batches`` and Arrow's allocator keep several for long."""
    import pyarrow as pa

    pool = pa.default_memory_pool()
    pf = _parquet_file(path, buffer_size=1 << 20)
    names = [c for c in (*columns, "error") if c in pf.schema_arrow.names]
    for group in range(pf.metadata.num_row_groups):  # iter_batches keeps decoded row groups for long
        table = pf.read_row_group(group, columns=names, use_threads=False)
        for batch in table.to_batches(max_chunksize=rows):
            yield _columns(path, batch, names)
        del table
        pool.release_unused()


def _list_storage(vec):
    """The vector column as an Arrow list array of numbers, whatever layout wrote it: Ray's
    tensor extension (its storage is a list), fixed_size_list (pandas/pyarrow, Ray with a fixed
    shape), list or large_list (Spark's array<float>)."""
    import pyarrow as pa

    if isinstance(vec.type, pa.ExtensionType):
        vec = vec.storage
    if not (pa.types.is_list(vec.type) or pa.types.is_large_list(vec.type)
            or pa.types.is_fixed_size_list(vec.type)):
        raise EngineError(f"vector column has type {vec.type}: need a list of numbers per row")
    return vec


def _vectors(path: Path, vec) -> tuple[np.ndarray, np.ndarray]:
    """(has, (n, d) float32) from one vector column: ``has`` whether a row has a vector; rows
    without one (null) are zeros. Every vector must have the same length."""
    import pyarrow.compute as pc

    vec = _list_storage(vec)
    has = np.asarray(vec.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if vec.null_count:
        vec = vec.filter(vec.is_valid())
    n = len(vec)
    lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False) if n else np.zeros(0)
    if n and lengths.min() != lengths.max():
        raise EngineError(f"{path}: vectors of different lengths ({int(lengths.min())} to {int(lengths.max())})")
    dim = int(lengths[0]) if n else 0
    values = vec.flatten()
    if values.null_count:
        raise EngineError(f"{path}: a vector holds a null value")
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if n == len(has):
        return has, flat.reshape(n, dim)
    full = np.zeros((len(has), dim), dtype=np.float32)
    if n:
        full[has] = flat.reshape(n, dim)
    return has, full


def _columns(path: Path, batch, names: list[str]) -> dict:
    """One record batch as the column dict ``_chunks`` yields."""
    cols = {n: batch.column(n) for n in names}
    vec = cols.pop("vector")
    out = {n: c.to_pylist() for n, c in cols.items()}
    has, out["vector"] = _vectors(path, vec)
    errors = out.get("error")
    failed = [isinstance(e, str) and bool(e) for e in errors] if errors is not None else None
    out["valid"] = has & ~np.array(failed, dtype=bool) if failed is not None else has
    return out


def _items(chunk: dict, keep: np.ndarray) -> list[dict]:
    return [{f: (chunk[f][i] if f in chunk else None) for f in ("sku", "label", "path", "content_hash")}
            for i in np.flatnonzero(keep)]


def build_from_parquet(folder: Path, out: Path, embedder: str | None = None, index_type: str = "auto",
                       config=None, chunk_rows: int = 4096, on_chunk: Callable[[int], None] | None = None) -> ShardBuild:
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
    dim = _dim(files)
    if side.get("dim") and int(side["dim"]) != dim:
        raise EngineError(f"{folder}: vectors are {dim}-d but {SIDECAR} says {side['dim']}")
    rows = _train_rows(counts, kind, cfg)
    if rows is None:
        cat = Catalog.create(out, name, dim, index_type, config=cfg, autosave=False)
    else:  # the index is trained first, on the sample alone, then every row is added in order
        sample = _gather(files, counts, rows, dim, chunk_rows)
        cat = Catalog.create_trained(out, name, dim, sample, total, index_type, config=cfg, autosave=False)
        del sample
    result = ShardBuild()
    for f in files:
        for chunk in _chunks(f, chunk_rows):
            valid = chunk["valid"]
            for i in np.flatnonzero(~valid):
                err = chunk["error"][i] if "error" in chunk and isinstance(chunk["error"][i], str) and chunk["error"][i] \
                    else "no vector"
                result.errors.append(f"{chunk['path'][i] if 'path' in chunk else i}: {err}")
            if valid.any():  # a photo present twice is added once (the catalog skips known hashes)
                vectors = chunk["vector"] if valid.all() else chunk["vector"][valid]
                done = cat.insert(vectors, _items(chunk, valid))
                result.added += done.n_new
                result.skipped += len(done.new) - done.n_new
            if on_chunk is not None:
                on_chunk(len(valid))
            del chunk
    cat.save()
    result.index_type = cat.index_type
    return result


def _dim(files: list[Path]) -> int:
    for f in files:
        for chunk in _chunks(f, 1024, columns=("vector",)):
            if chunk["valid"].any():
                return int(chunk["vector"].shape[1])
    raise EngineError(f"no row with a vector in {str(files[0]).rsplit('/', 1)[0]}")


def _train_rows(counts: list[int], kind: str, cfg) -> np.ndarray | None:
    """Sorted global row numbers of the training sample (trained index types only)."""
    if kind not in TRAINED:
        return None
    total = sum(counts)
    need = cfg.ivfpq_min_train if kind == "ivfpq" else cfg.binary_min_train
    size = max(min(cfg.train_max, total), min(need, total))
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(total, size, replace=False))


def _gather(files: list[Path], counts: list[int], rows: np.ndarray, dim: int, chunk_rows: int) -> np.ndarray:
    """The vectors of the sample rows (those that have one), read shard by shard into one float16
    array (what the IVF-PQ training holds anyway: half the memory of float32)."""
    out = np.empty((len(rows), dim), dtype=np.float16)
    got = offset = 0
    for f, n in zip(files, counts):
        lo, hi = np.searchsorted(rows, [offset, offset + n])
        if hi > lo:
            pos = 0
            for chunk in _chunks(f, chunk_rows, columns=("vector",)):
                m = len(chunk["valid"])
                a, b = np.searchsorted(rows, [offset + pos, offset + pos + m])
                idx = rows[a:b] - offset - pos
                idx = idx[chunk["valid"][idx]]
                out[got:got + len(idx)] = chunk["vector"][idx]
                got += len(idx)
                pos += m
                del chunk
        offset += n
    if not got:
        raise EngineError("no row of the training sample has a vector")
    return out[:got]


def build_catalog_ray(items, embedder: str, out: Path, shards: Path, index_type: str = "auto",
                      cfg: RayConfig = RayConfig(), batch_size: int = 16, device: str | None = "cpu",
                      progress: bool = True):
    """``catalog build --engine ray``: embed on Ray into ``shards``, then build ``out`` from them."""
    from engines.embed_engine import embed_to_shards

    from .catalog import HEADER
    from .embedders import create_embedder

    if (Path(out) / HEADER).exists():  # the catalog folder is local; photos and shards may be URIs
        raise EngineError(f"{out} already holds a catalog; use `shelfready catalog add`")
    embed_to_shards(items, create_embedder, embedder, shards, cfg, batch_size, device, progress)
    return build_from_parquet(shards, out, index_type=index_type)
