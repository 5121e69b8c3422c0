"""A FAISS catalog of product vectors with SQLite metadata, kept in one directory.

Layout::

    catalog_dir/
      catalog.json          header: embedder, dim, index type, metric, count, generation, format
      gen-<n>-<rand>/       the generation the header points at
        index.faiss         float index (IndexIDMap2 over flat / HNSW / IVF-PQ), or
        index.faissbin      binary index (IndexBinaryIDMap2, Hamming) + itq.faissvt
        items.sqlite        table items(id, sku, label, path, content_hash, added_at)

Crash safety: every save writes a complete new generation directory, fsyncs it,
then atomically replaces ``catalog.json`` (temp file + ``os.replace``) to point
at it; only then are older generations deleted. A crash at any moment leaves
the previous header pointing at the previous, complete generation. Saving
rewrites the whole index, so large catalogs should add in batches
(``autosave=False`` + ``save()``). One writing process per directory; within a
process, a lock serialises mutations and searches (safe for a threaded server).

Ids are assigned from a counter that never goes back, so an id always means the
same item. Scores: inner product (cosine on L2-normalised vectors) for float
indices; ``1 - 2 * hamming / bits`` for binary ones (the cosine estimate of sign
codes). Removing from an HNSW graph leaves a tombstone that searches filter out
(faiss ``IDSelectorNot``); the graph is rebuilt once tombstones pass
``IndexConfig.hnsw_compact_ratio``. Trained index types (``ivfpq``, ``binary``) stay exact ``flat`` until the
catalog holds enough vectors to train them; ``auto`` moves flat -> hnsw -> ivfpq as
the catalog grows (flat and hnsw keep exact vectors, so nothing is lost).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import faiss
import numpy as np

from .config import DEFAULT_INDEX, INDEX_TYPES, IndexConfig
from .indexes import binarize, build_index, new_float_index, plan_index, tune_index

FORMAT_VERSION = 1
HEADER = "catalog.json"
ITEM_FIELDS = ("sku", "label", "path", "content_hash")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    sku TEXT, label TEXT, path TEXT, content_hash TEXT,
    added_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_sku ON items(sku);
CREATE INDEX IF NOT EXISTS items_hash ON items(content_hash);
CREATE TABLE IF NOT EXISTS tombstones (id INTEGER PRIMARY KEY);  -- removed, still in the HNSW graph
"""


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    sku: str | None
    label: str | None
    path: str | None


@dataclass(frozen=True)
class Item:
    id: int
    sku: str | None
    label: str | None
    path: str | None
    content_hash: str | None
    added_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


class Catalog:
    """Use ``Catalog.create`` or ``Catalog.open``; see the module docstring."""

    def __init__(self, directory: Path, header: dict, index, itq, conn: sqlite3.Connection,
                 config: IndexConfig, autosave: bool) -> None:
        self.directory = directory
        self._header = header
        self._index = index
        self._itq = itq  # faiss.ITQTransform for binary indices, else None
        self._conn = conn
        self.config = config
        self.autosave = autosave
        self._lock = threading.RLock()
        self._tune()

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, directory: str | os.PathLike, embedder_name: str, dim: int,
               index_type: str = "auto", config: IndexConfig | None = None,
               autosave: bool = True) -> "Catalog":
        """New empty catalog in ``directory`` (created; must not hold a catalog)."""
        directory = Path(directory)
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {index_type!r}; choose from {', '.join(INDEX_TYPES)}")
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if (directory / HEADER).exists():
            raise FileExistsError(f"{directory} already holds a catalog; use Catalog.open")
        directory.mkdir(parents=True, exist_ok=True)
        cfg = config or DEFAULT_INDEX
        header = {
            "format_version": FORMAT_VERSION,
            "embedder": embedder_name,
            "dim": int(dim),
            "requested_index_type": index_type,
            "index_type": "flat",
            "metric": "inner_product",
            "count": 0,
            "next_id": 0,
            "generation": None,
            "note": "",
            "created_at": _now(),
            "updated_at": _now(),
        }
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(_SCHEMA)
        conn.commit()
        cat = cls(directory, header, new_float_index("flat", int(dim), cfg, None), None, conn, cfg, autosave)
        cat.save()
        return cat

    @classmethod
    def open(cls, directory: str | os.PathLike, config: IndexConfig | None = None,
             autosave: bool = True) -> "Catalog":
        """Open the catalog in ``directory`` at its last complete save."""
        directory = Path(directory)
        try:
            header = json.loads((directory / HEADER).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no catalog in {directory} (missing {HEADER})") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{directory / HEADER} is not valid JSON: {exc}") from None
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory} has catalog format {header.get('format_version')!r}; "
                f"this version reads format {FORMAT_VERSION}"
            )
        gen = directory / str(header.get("generation"))
        if not gen.is_dir():
            raise ValueError(f"{directory} is damaged: its generation folder {gen.name} is missing")
        binary = header["metric"] == "hamming"
        itq = None
        if binary:
            index = faiss.read_index_binary(str(gen / "index.faissbin"))
            itq = faiss.read_VectorTransform(str(gen / "itq.faissvt"))
        else:
            index = faiss.read_index(str(gen / "index.faiss"))
        src = sqlite3.connect((gen / "items.sqlite").resolve().as_uri() + "?mode=ro", uri=True)
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            src.backup(conn)
        finally:
            src.close()
        conn.executescript(_SCHEMA)
        conn.commit()
        dead = conn.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]
        if index.ntotal - dead != header["count"]:
            raise ValueError(f"{directory}: index holds {index.ntotal - dead} vectors, header says {header['count']}")
        return cls(directory, header, index, itq, conn, config or DEFAULT_INDEX, autosave)

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike, embedder_name: str, dim: int,
                       index_type: str = "auto", **kwargs) -> "Catalog":
        """Open if present (refusing another embedder), else create."""
        if (Path(directory) / HEADER).exists():
            cat = cls.open(directory, **kwargs)
            cat.check_embedder(embedder_name, dim)
            return cat
        return cls.create(directory, embedder_name, dim, index_type, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def embedder_name(self) -> str:
        return self._header["embedder"]

    @property
    def dim(self) -> int:
        return self._header["dim"]

    @property
    def index_type(self) -> str:
        """The index in use now: flat | hnsw | ivfpq | binary."""
        return self._header["index_type"]

    @property
    def requested_index_type(self) -> str:
        return self._header["requested_index_type"]

    @property
    def metric(self) -> str:
        return self._header["metric"]

    @property
    def note(self) -> str:
        return self._header["note"]

    def header(self) -> dict:
        with self._lock:
            return dict(self._header)

    def __len__(self) -> int:
        return self._header["count"]

    def __repr__(self) -> str:
        return (f"<Catalog {self.directory} {self.embedder_name} {self.dim}-d "
                f"{self.index_type} n={len(self)}>")

    # ------------------------------------------------------------------ checks

    def check_embedder(self, name: str, dim: int | None = None) -> None:
        """ValueError unless vectors of ``name`` (``dim``) belong in this catalog."""
        if name != self.embedder_name or (dim is not None and dim != self.dim):
            got = f"{name} ({dim}-d)" if dim is not None else name
            raise ValueError(
                f"catalog was built with {self.embedder_name} ({self.dim}-d); got {got}"
            )

    def _check_vectors(self, vectors: Any) -> np.ndarray:
        x = np.asarray(vectors)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n, {self.dim}), got shape {x.shape}")
        if x.shape[1] != self.dim:
            raise ValueError(
                f"catalog was built with {self.embedder_name} ({self.dim}-d); got {x.shape[1]}-d vectors"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"vectors must be floating point, got {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinity")
        return x

    # ------------------------------------------------------------------ mutations

    def add(self, vectors: Any, items: Sequence[Mapping[str, Any] | None] | None = None) -> list[int]:
        """Add L2-normalised vectors with their metadata; return their new ids."""
        x = self._check_vectors(vectors)
        n = len(x)
        if items is None:
            items = [None] * n
        items = list(items)
        if len(items) != n:
            raise ValueError(f"{n} vectors but {len(items)} items")
        rows = [self._item_row(it) for it in items]
        norms = np.linalg.norm(x, axis=1)
        if n and not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError("vectors must be L2-normalised (embedders return them so)")
        if n == 0:
            return []
        with self._lock:
            start = self._header["next_id"]
            ids = np.arange(start, start + n, dtype=np.int64)
            now = _now()
            try:
                self._conn.executemany(
                    "INSERT INTO items (id, sku, label, path, content_hash, added_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [(int(i), *row, now) for i, row in zip(ids, rows)],
                )
                self._conn.commit()
                self._header["next_id"] = start + n
                kind = self._plan(len(self) + n)
                if kind is None:
                    self._add_to_index(x, ids)
                else:  # build the next index type from the old and new vectors at once
                    all_ids, all_vecs = self._all_vectors()
                    self._index = None  # free it first: a failure reloads the last save anyway
                    if len(all_ids):
                        all_vecs = np.concatenate([all_vecs, x])
                        all_ids = np.concatenate([all_ids, ids])
                    else:
                        all_vecs, all_ids = x, ids
                    self._build(kind, all_vecs, all_ids)
                    del all_vecs
                self._header["count"] = int(self._index.ntotal) - int(self._tombstones().size)
                if self.autosave:
                    self.save()
            except BaseException:
                self._reload()  # memory back to the last complete save
                raise
            return [int(i) for i in ids]

    def remove(self, ids: Sequence[int]) -> int:
        """Remove items by id (unknown ids are ignored); return how many were removed."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        with self._lock:
            present = [i for i in wanted if self._conn.execute(
                "SELECT 1 FROM items WHERE id = ?", (i,)).fetchone()]
            if not present:
                return 0
            try:
                self._conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in present])
                self._conn.commit()
                arr = np.asarray(present, dtype=np.int64)
                if self.index_type == "hnsw":  # a graph cannot delete in place: filter, compact later
                    self._conn.executemany("INSERT INTO tombstones (id) VALUES (?)", [(i,) for i in present])
                    self._conn.commit()
                    if self._tombstones().size > self.config.hnsw_compact_ratio * self._index.ntotal:
                        ids, vecs = self._all_vectors()
                        self._build("hnsw", vecs, ids)
                else:
                    removed = self._index.remove_ids(arr)
                    if removed != len(arr):
                        raise RuntimeError(f"index removed {removed} of {len(arr)} ids")
                self._header["count"] = int(self._index.ntotal) - int(self._tombstones().size)
                self._tune()
                if self.autosave:
                    self.save()
            except BaseException:
                self._reload()
                raise
            return len(present)

    def save(self) -> None:
        """Write a new generation, switch the header to it atomically, drop old ones."""
        with self._lock:
            self._header["updated_at"] = _now()
            gen_name = f"gen-{self._header['next_id']:012d}-{secrets.token_hex(4)}"
            gen = self.directory / gen_name
            gen.mkdir()
            try:
                if self.metric == "hamming":
                    faiss.write_index_binary(self._index, str(gen / "index.faissbin"))
                    faiss.write_VectorTransform(self._itq, str(gen / "itq.faissvt"))
                    _fsync_file(gen / "index.faissbin")
                    _fsync_file(gen / "itq.faissvt")
                else:
                    faiss.write_index(self._index, str(gen / "index.faiss"))
                    _fsync_file(gen / "index.faiss")
                dst = sqlite3.connect(gen / "items.sqlite")
                try:
                    self._conn.backup(dst)
                finally:
                    dst.close()
                _fsync_file(gen / "items.sqlite")
                _fsync_dir(gen)
                header = dict(self._header, generation=gen_name)
                tmp = self.directory / f".{HEADER}.{secrets.token_hex(4)}.tmp"
                with open(tmp, "w") as fh:
                    json.dump(header, fh, indent=2, sort_keys=True)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.directory / HEADER)
                _fsync_dir(self.directory)
            except BaseException:
                shutil.rmtree(gen, ignore_errors=True)
                for stray in self.directory.glob(f".{HEADER}.*.tmp"):
                    stray.unlink(missing_ok=True)
                raise
            self._header["generation"] = gen_name
            for old in self.directory.glob("gen-*"):  # older and half-written generations
                if old.name != gen_name and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            for stray in self.directory.glob(f".{HEADER}.*.tmp"):
                stray.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reads

    def search(self, vectors: Any, k: int = 10) -> list[list[Hit]]:
        """Top-``k`` hits per query vector, best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        x = self._check_vectors(vectors)
        with self._lock:
            if len(x) == 0 or len(self) == 0:
                return [[] for _ in range(len(x))]
            kk = min(k, len(self))
            if self.metric == "hamming":
                dist, ids = self._index.search(binarize(self._itq, x), kk)
                scores = 1.0 - 2.0 * dist.astype(np.float32) / self._itq.d_out
            elif self._sel is not None:
                params = faiss.SearchParametersHNSW(sel=self._sel, efSearch=self.config.hnsw_ef_search)
                scores, ids = self._index.search(x, kk, params=params)
            else:
                scores, ids = self._index.search(x, kk)
            meta = self._lookup({int(i) for i in ids.ravel() if i >= 0})
        out = []
        for row_s, row_i in zip(scores, ids):
            hits = []
            for s, i in zip(row_s, row_i):
                if i < 0 or int(i) not in meta:
                    continue
                sku, label, path = meta[int(i)]
                hits.append(Hit(int(i), float(s), sku, label, path))
            out.append(hits)
        return out

    def get(self, id: int) -> Item:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, sku, label, path, content_hash, added_at FROM items WHERE id = ?", (int(id),)
            ).fetchone()
        if row is None:
            raise KeyError(f"no item with id {id}")
        return Item(*row)

    def ids(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM items ORDER BY id")]

    def find_hash(self, content_hash: str) -> list[int]:
        """Ids of items added with this content hash (to skip re-adding a photo)."""
        with self._lock:
            return [r[0] for r in self._conn.execute(
                "SELECT id FROM items WHERE content_hash = ? ORDER BY id", (content_hash,))]

    # ------------------------------------------------------------------ images

    def add_images(self, images, items, embedder) -> list[int]:
        self.check_embedder(embedder.name, embedder.dim)
        return self.add(embedder.embed(images), items)

    def search_images(self, images, k: int, embedder) -> list[list[Hit]]:
        self.check_embedder(embedder.name, embedder.dim)
        return self.search(embedder.embed(images), k)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _item_row(item: Mapping[str, Any] | None) -> tuple:
        if item is None:
            return (None,) * len(ITEM_FIELDS)
        if not isinstance(item, Mapping):
            raise ValueError(f"items must be mappings with keys {ITEM_FIELDS}, got {type(item).__name__}")
        extra = set(item) - set(ITEM_FIELDS)
        if extra:
            raise ValueError(f"unknown item fields {sorted(extra)}; allowed: {', '.join(ITEM_FIELDS)}")
        return tuple(None if item.get(f) is None else str(item.get(f)) for f in ITEM_FIELDS)

    def _lookup(self, ids: set[int]) -> dict[int, tuple]:
        out: dict[int, tuple] = {}
        ids_l = sorted(ids)
        for s in range(0, len(ids_l), 500):
            chunk = ids_l[s:s + 500]
            q = f"SELECT id, sku, label, path FROM items WHERE id IN ({','.join('?' * len(chunk))})"
            for r in self._conn.execute(q, chunk):
                out[r[0]] = r[1:]
        return out

    def _reload(self) -> None:
        fresh = Catalog.open(self.directory, self.config, self.autosave)
        self._header, self._index, self._itq, self._conn = fresh._header, fresh._index, fresh._itq, fresh._conn
        self._tune()

    def _tune(self) -> None:
        """Search-time parameters come from the config, not the file; tombstone filter."""
        tune_index(self._index, self.config)
        dead = self._tombstones()
        self._sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead)) if dead.size else None

    def _tombstones(self) -> np.ndarray:
        return np.array([r[0] for r in self._conn.execute("SELECT id FROM tombstones")], dtype=np.int64)

    def _add_to_index(self, x: np.ndarray, ids: np.ndarray) -> None:
        if self.metric == "hamming":
            self._index.add_with_ids(binarize(self._itq, x), ids)
        else:
            self._index.add_with_ids(x, ids)

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, exact vectors) of a flat or hnsw index, removed items left out."""
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        inner = self._index.index
        vecs = inner.reconstruct_n(0, inner.ntotal) if inner.ntotal else np.empty((0, self.dim), np.float32)
        dead = self._tombstones()
        if dead.size:
            keep = ~np.isin(ids, dead)
            ids, vecs = ids[keep], vecs[keep]
        return ids, vecs

    def _build(self, kind: str, vecs: np.ndarray, ids: np.ndarray) -> None:
        """Replace the index by a fresh ``kind`` index holding (vecs, ids)."""
        self._index, self._itq, self._header["metric"] = build_index(kind, vecs, ids, self.dim, self.config)
        self._header["index_type"] = kind
        self._conn.execute("DELETE FROM tombstones")  # a fresh index holds only live items
        self._conn.commit()
        self._tune()

    def _plan(self, n_after: int) -> str | None:
        """Index type to rebuild into before holding ``n_after`` vectors, or None to add in place."""
        kind, self._header["note"] = plan_index(self.index_type, self.requested_index_type, n_after, self.config)
        return kind
