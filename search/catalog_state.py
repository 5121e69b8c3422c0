"""One catalog generation in memory: its FAISS index and item table, and the work on them.

``search.catalog.Catalog`` decides when (locks, loading the latest generation,
saving); this module does what: adding rows (skipping known content hashes),
removing, searching and looking items up. Not thread-safe by itself: the
catalog calls it under its own lock.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from .config import IndexConfig
from .generations import Generation, now
from .indexes import binarize, build_index, plan_index, tune_index
from .items import ITEM_FIELDS, Hit, Item

_HASH = ITEM_FIELDS.index("content_hash")


@dataclass(frozen=True)
class Added:
    """What ``Catalog.insert`` did, one entry per input vector, in order."""

    ids: list[int]
    new: list[bool]  # False: its content hash was already in the catalog, ``ids`` holds that item's id

    @property
    def n_new(self) -> int:
        return sum(self.new)


class CatalogState:
    def __init__(self, gen: Generation, config: IndexConfig) -> None:
        self.gen = gen
        self.header = gen.header
        self.config = config
        self.tune()

    @property
    def index(self):
        return self.gen.index

    @property
    def conn(self):
        return self.gen.conn

    @property
    def count(self) -> int:
        return self.header["count"]

    # ------------------------------------------------------------------ changes

    def insert(self, x: np.ndarray, rows: list[tuple]) -> Added:
        """Add the rows whose content hash is new (known ones give their existing id)."""
        start = next_id = self.header["next_id"]
        ids, new, fresh = [], [], []
        known: dict[str, int] = {}
        for j, row in enumerate(rows):
            digest = row[_HASH]
            if digest is not None and digest not in known:
                found = self.conn.execute("SELECT MIN(id) FROM items WHERE content_hash = ?",
                                          (digest,)).fetchone()[0]
                if found is not None:
                    known[digest] = int(found)
            if digest is not None and digest in known:
                ids.append(known[digest])
                new.append(False)
                continue
            if digest is not None:
                known[digest] = next_id
            ids.append(next_id)
            new.append(True)
            fresh.append(j)
            next_id += 1
        if not fresh:
            return Added(ids, new)
        if len(fresh) < len(x):  # (no copy when every row is new: a big first add)
            x = x[fresh]
        new_ids = np.arange(start, next_id, dtype=np.int64)
        stamp = now()
        self.conn.executemany(
            "INSERT INTO items (id, sku, label, path, content_hash, added_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(int(i), *rows[j], stamp) for i, j in zip(new_ids, fresh)],
        )
        self.conn.commit()
        self.header["next_id"] = next_id
        kind = self._plan(self.count + len(new_ids))
        if kind is None:
            self._add_to_index(x, new_ids)
        else:  # build the next index type from the old and new vectors at once
            all_ids, all_vecs = self.all_vectors()
            self.gen.index = None  # free it first: a failure reloads the last save anyway
            if len(all_ids):
                all_vecs, all_ids = np.concatenate([all_vecs, x]), np.concatenate([all_ids, new_ids])
            else:
                all_vecs, all_ids = x, new_ids
            self._build(kind, all_vecs, all_ids)
            del all_vecs
        self._recount()
        return Added(ids, new)

    def present(self, ids: list[int]) -> list[int]:
        return [i for i in ids if self.conn.execute("SELECT 1 FROM items WHERE id = ?", (i,)).fetchone()]

    def remove(self, present: list[int]) -> None:
        """Remove items known to be present."""
        self.conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in present])
        self.conn.commit()
        if self.header["index_type"] == "hnsw":  # a graph cannot delete in place: filter, compact later
            self.conn.executemany("INSERT INTO tombstones (id) VALUES (?)", [(i,) for i in present])
            self.conn.commit()
            if self.tombstones().size > self.config.hnsw_compact_ratio * self.index.ntotal:
                live_ids, vecs = self.all_vectors()
                self._build("hnsw", vecs, live_ids)
        else:
            removed = self.index.remove_ids(np.asarray(present, dtype=np.int64))
            if removed != len(present):
                raise RuntimeError(f"index removed {removed} of {len(present)} ids")
        self._recount()
        self.tune()

    # ------------------------------------------------------------------ reads

    def search(self, x: np.ndarray, k: int) -> list[list[Hit]]:
        if len(x) == 0 or self.count == 0:
            return [[] for _ in range(len(x))]
        kk = min(k, self.count)
        if self.header["metric"] == "hamming":
            dist, ids = self.index.search(binarize(self.gen.itq, x), kk)
            scores = 1.0 - 2.0 * dist.astype(np.float32) / self.gen.itq.d_out
        elif self._sel is not None:
            params = faiss.SearchParametersHNSW(sel=self._sel, efSearch=self.config.hnsw_ef_search)
            scores, ids = self.index.search(x, kk, params=params)
        else:
            scores, ids = self.index.search(x, kk)
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

    def get(self, id: int) -> Item | None:
        row = self.conn.execute(
            "SELECT id, sku, label, path, content_hash, added_at FROM items WHERE id = ?", (int(id),)
        ).fetchone()
        return None if row is None else Item(*row)

    def ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM items ORDER BY id")]

    def items(self) -> list[Item]:
        return [Item(*r) for r in self.conn.execute(
            "SELECT id, sku, label, path, content_hash, added_at FROM items ORDER BY id")]

    def find_hash(self, content_hash: str) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM items WHERE content_hash = ? ORDER BY id", (content_hash,))]

    # ------------------------------------------------------------------ index

    def tune(self) -> None:
        """Search-time parameters come from the config, not the file; tombstone filter."""
        tune_index(self.index, self.config)
        dead = self.tombstones()
        self._sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead)) if dead.size else None

    def tombstones(self) -> np.ndarray:
        return np.array([r[0] for r in self.conn.execute("SELECT id FROM tombstones")], dtype=np.int64)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, exact vectors) of a flat or hnsw index, removed items left out."""
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        inner = self.index.index
        vecs = (inner.reconstruct_n(0, inner.ntotal) if inner.ntotal
                else np.empty((0, self.header["dim"]), np.float32))
        dead = self.tombstones()
        if dead.size:
            keep = ~np.isin(ids, dead)
            ids, vecs = ids[keep], vecs[keep]
        return ids, vecs

    def _lookup(self, ids: set[int]) -> dict[int, tuple]:
        out: dict[int, tuple] = {}
        ids_l = sorted(ids)
        for s in range(0, len(ids_l), 500):
            chunk = ids_l[s:s + 500]
            q = f"SELECT id, sku, label, path FROM items WHERE id IN ({','.join('?' * len(chunk))})"
            for r in self.conn.execute(q, chunk):
                out[r[0]] = r[1:]
        return out

    def _recount(self) -> None:
        self.header["count"] = int(self.index.ntotal) - int(self.tombstones().size)

    def _add_to_index(self, x: np.ndarray, ids: np.ndarray) -> None:
        if self.header["metric"] == "hamming":
            self.index.add_with_ids(binarize(self.gen.itq, x), ids)
        else:
            self.index.add_with_ids(x, ids)

    def _build(self, kind: str, vecs: np.ndarray, ids: np.ndarray) -> None:
        """Replace the index by a fresh ``kind`` index holding (vecs, ids)."""
        self.gen.index, self.gen.itq, self.header["metric"] = build_index(
            kind, vecs, ids, self.header["dim"], self.config)
        self.header["index_type"] = kind
        self.conn.execute("DELETE FROM tombstones")  # a fresh index holds only live items
        self.conn.commit()
        self.tune()

    def _plan(self, n_after: int) -> str | None:
        """Index type to rebuild into before holding ``n_after`` vectors, or None to add in place."""
        kind, self.header["note"] = plan_index(self.header["index_type"], self.header["requested_index_type"],
                                               n_after, self.config)
        return kind
