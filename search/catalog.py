"""A FAISS catalog of product vectors with SQLite metadata in one folder, shared by processes.

The folder layout and crash safety are in ``search.generations`` (each save
writes a complete new generation, then switches the header to it atomically);
the OS locks are in ``search.locks``. How several processes share a catalog:

* Writers. ``add``/``insert``/``remove`` take the catalog's write lock (waiting
  up to ``StoreConfig.lock_timeout`` s, then ``CatalogBusy``), load the latest
  generation if another process saved one since, apply the change, save a new
  generation and release the lock. So no writer loses another's items, and ids
  come from the ``next_id`` saved with the latest generation: an id is never
  given twice, even after its item was removed. With ``autosave=False`` the
  first change takes the lock and ``save()`` releases it (``close()`` releases
  it and drops unsaved changes): a batch of changes is one transaction, written
  once, while other writers wait; ids it returns are final once it is saved.
* Readers. ``search``, ``get``, ``ids``, ``items``, ``find_hash``, ``len`` and
  ``header()`` first compare the header's generation with the one in memory and
  load the new one when it changed, so a running server sees other processes'
  writes at its next call. Each call sees one whole generation, never a mix.
* Old generations. A generation is read whole into memory when it is loaded;
  while it loads, its folder holds a shared lock. After each save the writer
  deletes every other generation it can lock exclusively without waiting; one
  still being loaded stays until a later save. A killed process's locks die
  with it, and its leftovers are never pointed at (see search.generations).
* Duplicates. An item whose ``content_hash`` is already in the catalog (or
  earlier in the same call) is not added again: its existing id is returned
  (``insert`` says which were new). The CLI and the API both rely on this rule.
* Within one process, threads share an object safely: one change at a time,
  and a change waiting for another process's lock does not block searches.

Scores: inner product (cosine on L2-normalised vectors) for float indices;
``1 - 2 * hamming / bits`` for binary ones (the cosine estimate of sign codes).
Removing from an HNSW graph leaves a tombstone that searches filter out (faiss
``IDSelectorNot``); the graph is rebuilt once tombstones pass
``IndexConfig.hnsw_compact_ratio``. Trained index types (``ivfpq``, ``binary``)
stay exact ``flat`` until the catalog holds enough vectors to train them;
``auto`` moves flat -> hnsw -> ivfpq as the catalog grows (flat and hnsw keep
exact vectors, so nothing is lost). Saving rewrites the whole index.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .catalog_state import Added, CatalogState
from .config import DEFAULT_INDEX, DEFAULT_STORE, INDEX_TYPES, IndexConfig, StoreConfig
from .generations import (
    FORMAT_VERSION,
    HEADER,
    Generation,
    has_catalog,
    load_latest,
    new_items_db,
    now,
    read_header,
    remove_stale,
    write_generation,
)
from .indexes import build_index, new_float_index, target_index_type, trained_ivfpq
from .items import ITEM_FIELDS, Hit, Item, item_row
from .locks import CatalogBusy, WriteLock

_CHECK_ROWS = 65_536  # rows checked (finite, unit length) at a time: no temporary as big as the vectors


def _finite(x: np.ndarray) -> bool:
    return all(np.isfinite(x[s:s + _CHECK_ROWS]).all() for s in range(0, len(x), _CHECK_ROWS))

__all__ = ["Added", "Catalog", "CatalogBusy", "Hit", "Item", "ITEM_FIELDS", "HEADER", "FORMAT_VERSION"]


class Catalog:
    """Use ``Catalog.create`` or ``Catalog.open``; see the module docstring."""

    def __init__(self, directory: Path, state: Generation, config: IndexConfig, autosave: bool,
                 store: StoreConfig) -> None:
        self.directory = Path(directory)
        self.config = config
        self.store = store
        self.autosave = autosave
        self._lock = threading.RLock()  # the state in memory: swaps, changes, searches
        self._mutate = threading.Lock()  # one change at a time in this object, OS lock included
        self._writer = WriteLock(self.directory, store.lock_timeout, store.lock_poll)
        self._dirty = False
        self._use(state)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, directory: str | os.PathLike, embedder_name: str, dim: int,
               index_type: str = "auto", config: IndexConfig | None = None,
               autosave: bool = True, store: StoreConfig | None = None, embed: dict | None = None) -> "Catalog":
        """New empty catalog in ``directory`` (created; must not hold a catalog).

        ``embed``: how its vectors are made (``search.embed_modes``), kept in the header;
        None = raw photos."""
        directory = Path(directory)
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {index_type!r}; choose from {', '.join(INDEX_TYPES)}")
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if has_catalog(directory):
            raise FileExistsError(f"{directory} already holds a catalog; use Catalog.open")
        directory.mkdir(parents=True, exist_ok=True)
        cfg, store = config or DEFAULT_INDEX, store or DEFAULT_STORE
        header = {
            "format_version": FORMAT_VERSION, "embedder": embedder_name, "dim": int(dim),
            "requested_index_type": index_type, "index_type": "flat", "metric": "inner_product",
            "count": 0, "next_id": 0, "generation": None, "note": "",
            "created_at": now(), "updated_at": now(), "embed": dict(embed or {"mode": "raw"}),
        }
        state = Generation(header, new_float_index("flat", int(dim), cfg, None), None, new_items_db())
        lock = WriteLock(directory, store.lock_timeout, store.lock_poll)
        lock.acquire()
        try:
            if has_catalog(directory):  # another process created it while we waited
                raise FileExistsError(f"{directory} already holds a catalog; use Catalog.open")
            remove_stale(directory, write_generation(directory, state))
        finally:
            lock.release()
        return cls(directory, state, cfg, autosave, store)

    @classmethod
    def create_trained(cls, directory: str | os.PathLike, embedder_name: str, dim: int, train: np.ndarray,
                       n_total: int, index_type: str = "auto", config: IndexConfig | None = None,
                       autosave: bool = True, store: StoreConfig | None = None) -> "Catalog":
        """New empty catalog whose index is already the type a catalog of ``n_total`` vectors gets,
        trained on ``train`` (a sample of them, as ``add`` of all of them would have drawn; float32
        or float16 rows: ivfpq training holds its sample as float16 anyway); fill it with ``add``
        batch by batch and nothing is rebuilt. For catalogs too big to add at once: the item table
        being filled is kept in a temporary file, not in memory. Untrained types (flat, hnsw) are
        created as ``create`` does.
        """
        cfg = config or DEFAULT_INDEX
        kind, note = target_index_type(index_type, int(n_total), cfg)
        cat = cls.create(directory, embedder_name, dim, index_type, cfg, autosave, store)
        if kind not in ("ivfpq", "binary"):
            return cat
        x = train
        if not (isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float16) and x.ndim == 2
                and x.shape[1] == cat.dim and len(x)):
            raise ValueError(f"train must be a float32 or float16 (n, {cat.dim}) array")
        if not _finite(x):
            raise ValueError("vectors contain NaN or infinity")
        if kind == "ivfpq":
            index, itq, metric = trained_ivfpq(x, int(n_total), cat.dim, cfg), None, "inner_product"
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
            index, itq, metric = build_index(kind, x, np.arange(len(x), dtype=np.int64), cat.dim, cfg)
            index.reset()
        with cat._writing():
            cat._state.gen.index, cat._state.gen.itq = index, itq
            cat._state.gen.conn = new_items_db(on_disk=True)  # (empty, as create left it)
            cat._state.header.update(index_type=kind, metric=metric, note=note)
            cat._state.tune()
            cat._dirty = True
        return cat

    @classmethod
    def open(cls, directory: str | os.PathLike, config: IndexConfig | None = None,
             autosave: bool = True, store: StoreConfig | None = None) -> "Catalog":
        """Open the catalog in ``directory`` at its last complete save."""
        return cls(Path(directory), load_latest(Path(directory)), config or DEFAULT_INDEX, autosave,
                   store or DEFAULT_STORE)

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike, embedder_name: str, dim: int,
                       index_type: str = "auto", **kwargs) -> "Catalog":
        """Open if present (refusing another embedder), else create."""
        try:
            cat = cls.open(directory, **kwargs)
        except FileNotFoundError:
            try:
                return cls.create(directory, embedder_name, dim, index_type, **kwargs)
            except FileExistsError:  # another process was quicker
                cat = cls.open(directory, **kwargs)
        cat.check_embedder(embedder_name, dim)
        return cat

    def close(self) -> None:
        """Release the write lock; unsaved changes (``autosave=False``) are dropped."""
        with self._mutate:
            if self._dirty:
                with self._lock:
                    self._discard()
            self._writer.release()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ properties

    @property
    def embedder_name(self) -> str:
        return self._state.header["embedder"]

    @property
    def dim(self) -> int:
        return self._state.header["dim"]

    @property
    def index_type(self) -> str:
        """The index in use now: flat | hnsw | ivfpq | binary."""
        return self._state.header["index_type"]

    @property
    def requested_index_type(self) -> str:
        return self._state.header["requested_index_type"]

    @property
    def metric(self) -> str:
        return self._state.header["metric"]

    @property
    def embed(self) -> dict:
        """How the vectors were made: {"mode": raw|clean|fused, ...} (older catalogs: raw)."""
        return dict(self._state.header.get("embed") or {"mode": "raw"})

    @property
    def note(self) -> str:
        return self._state.header["note"]

    def header(self) -> dict:
        with self._lock:
            self._catch_up()
            return dict(self._state.header)

    def __len__(self) -> int:
        with self._lock:
            self._catch_up()
            return self._state.count

    def __repr__(self) -> str:
        return (f"<Catalog {self.directory} {self.embedder_name} {self.dim}-d "
                f"{self.index_type} n={self._state.count}>")

    @property
    def _index(self):  # the FAISS index in memory (bench/catalog_speed.py reads its PQ sizes)
        return self._state.index

    def resolve_path(self, path: str) -> Path:
        """Where an item's stored path points: relative paths are relative to the catalog folder."""
        return self.directory / path

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
        x = np.ascontiguousarray(x, dtype=np.float32)  # no copy of float32 rows already in one block
        if not _finite(x):
            raise ValueError("vectors contain NaN or infinity")
        return x

    # ------------------------------------------------------------------ changes

    def add(self, vectors: Any, items: Sequence[Mapping[str, Any] | None] | None = None) -> list[int]:
        """Add L2-normalised vectors with their metadata; return their ids (for an item whose
        content hash is already in the catalog, the existing item's id: it is not added again)."""
        return self.insert(vectors, items).ids

    def insert(self, vectors: Any, items: Sequence[Mapping[str, Any] | None] | None = None) -> Added:
        """``add`` that also says which items were new."""
        x = self._check_vectors(vectors)
        n = len(x)
        items = [None] * n if items is None else list(items)
        if len(items) != n:
            raise ValueError(f"{n} vectors but {len(items)} items")
        rows = [item_row(it) for it in items]
        if not all(np.allclose(np.linalg.norm(x[s:s + _CHECK_ROWS], axis=1), 1.0, atol=1e-3)
                   for s in range(0, n, _CHECK_ROWS)):
            raise ValueError("vectors must be L2-normalised (embedders return them so)")
        if n == 0:
            return Added([], [])
        with self._writing():
            added = self._state.insert(x, rows)
            self._dirty = self._dirty or added.n_new > 0
            return added

    def remove(self, ids: Sequence[int]) -> int:
        """Remove items by id (unknown ids are ignored); return how many were removed."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        with self._writing():
            present = self._state.present(wanted)
            if present:
                self._dirty = True
                self._state.remove(present)
            return len(present)

    def save(self) -> None:
        """Write unsaved changes (``autosave=False``) as a new generation; release the write lock.

        If writing fails, the changes and the lock are kept: call ``save()`` again or ``close()``.
        """
        with self._mutate:
            with self._lock:
                if self._dirty:
                    self._save()
            self._writer.release()

    # ------------------------------------------------------------------ reads

    def search(self, vectors: Any, k: int = 10) -> list[list[Hit]]:
        """Top-``k`` hits per query vector, best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        x = self._check_vectors(vectors)
        with self._lock:
            self._catch_up()
            return self._state.search(x, k)

    def get(self, id: int) -> Item:
        with self._lock:
            self._catch_up()
            item = self._state.get(id)
        if item is None:
            raise KeyError(f"no item with id {id}")
        return item

    def ids(self) -> list[int]:
        with self._lock:
            self._catch_up()
            return self._state.ids()

    def items(self) -> list[Item]:
        """Every item, by id, all from one generation."""
        with self._lock:
            self._catch_up()
            return self._state.items()

    def find_hash(self, content_hash: str) -> list[int]:
        """Ids of items added with this content hash (to skip re-adding a photo)."""
        with self._lock:
            self._catch_up()
            return self._state.find_hash(content_hash)

    # ------------------------------------------------------------------ images

    def add_images(self, images, items, embedder) -> list[int]:
        self.check_embedder(embedder.name, embedder.dim)
        return self.add(embedder.embed(images), items)

    def search_images(self, images, k: int, embedder) -> list[list[Hit]]:
        self.check_embedder(embedder.name, embedder.dim)
        return self.search(embedder.embed(images), k)

    # ------------------------------------------------------------------ sharing

    @contextmanager
    def _writing(self):
        """The write lock and the latest generation, for one change (autosave) or until save()."""
        with self._mutate:
            first = not self._writer.held
            self._writer.acquire()  # may wait for another process; searches go on meanwhile
            try:
                with self._lock:
                    if first:
                        self._sync()
                    yield
                    if self.autosave and self._dirty:
                        self._save()
            except BaseException:
                try:
                    with self._lock:
                        self._discard()  # memory back to the last complete save
                finally:
                    self._writer.release()
                raise
            if self.autosave:
                self._writer.release()

    def _save(self) -> None:
        name = write_generation(self.directory, self._state.gen)
        self._dirty = False
        remove_stale(self.directory, name)

    def _catch_up(self) -> None:
        """Readers: switch to the latest generation if another process saved one."""
        if not (self._writer.held or self._dirty):  # while we write, nobody else can
            self._sync()

    def _sync(self) -> None:
        if read_header(self.directory).get("generation") != self._state.gen.name:
            self._use(load_latest(self.directory))

    def _discard(self) -> None:
        self._dirty = False
        self._use(load_latest(self.directory))

    def _use(self, gen: Generation) -> None:
        self._state = CatalogState(gen, self.config)
