"""A catalog folder on disk: the header, generation folders, writing and loading them.

Layout (format 1)::

    catalog_dir/
      catalog.json          header: embedder, dim, index type, metric, count, next_id, generation, format
      .lock                 the writers' lock file (search.locks)
      gen-<next_id>-<rand>/ the generation the header points at (older ones until they are deleted)
        index.faiss         float index (IndexIDMap2 over flat / HNSW / IVF-PQ), or
        index.faissbin      binary index (IndexBinaryIDMap2, Hamming) + itq.faissvt
        items.sqlite        items(id, sku, label, path, content_hash, added_at), tombstones(id)

A generation is written whole (every file fsynced, then the folder), then the
header is replaced atomically (temp file, fsync, ``os.replace``, fsync of the
catalog folder). A process killed at any point leaves the header pointing at a
complete generation; what it leaves behind (a half-written generation, a temp
header, an old generation half deleted) is never pointed at and is removed by
the next writer. Only writers holding the write lock write or delete here.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss

from .locks import claimed, pinned

FORMAT_VERSION = 1
HEADER = "catalog.json"
GEN_PREFIX = "gen-"
_TMP_GLOB = f".{HEADER}.*.tmp"
_PIN_TRIES = 200
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    sku TEXT, label TEXT, path TEXT, content_hash TEXT,
    added_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_sku ON items(sku);
CREATE INDEX IF NOT EXISTS items_hash ON items(content_hash);
CREATE TABLE IF NOT EXISTS tombstones (id INTEGER PRIMARY KEY);  -- removed, still in the HNSW graph
"""


@dataclass
class Generation:
    """One generation in memory: the header that points at it, its index and its item table."""

    header: dict
    index: object
    itq: object  # faiss.ITQTransform for binary indices, else None
    conn: sqlite3.Connection  # in memory (or a private temporary file: new_items_db), with SCHEMA

    @property
    def name(self) -> str | None:
        return self.header.get("generation")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_items_db(on_disk: bool = False) -> sqlite3.Connection:
    """An empty item table in memory or, ``on_disk``, in a private temporary file (SQLite unlinks it
    as it opens it, so nothing is left behind even by a killed process) of which only SQLite's page
    cache is in memory: for builds of millions of items."""
    conn = sqlite3.connect("" if on_disk else ":memory:", check_same_thread=False)
    conn.executescript(SCHEMA)
    conn.commit()
    return conn


def has_catalog(directory: Path) -> bool:
    return (Path(directory) / HEADER).exists()


def read_header(directory: Path) -> dict:
    """The header of the catalog in ``directory``; one-line errors for missing/bad ones."""
    directory = Path(directory)
    try:
        header = json.loads((directory / HEADER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no catalog in {directory} (missing {HEADER})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{directory / HEADER} is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
        version = header.get("format_version") if isinstance(header, dict) else None
        raise ValueError(f"{directory} has catalog format {version!r}; this version reads format {FORMAT_VERSION}")
    return header


def load_latest(directory: Path) -> Generation:
    """The generation the header points at, pinned while it loads so no writer deletes it."""
    directory = Path(directory)
    for _ in range(_PIN_TRIES):
        header = read_header(directory)
        gen = directory / str(header.get("generation"))
        with pinned(gen) as ok:
            still = read_header(directory).get("generation") == header.get("generation")
            if ok and still:  # current after we pinned it: complete, and nobody deletes it now
                return _load(directory, gen, header)
            if still and not gen.is_dir():
                raise ValueError(f"{directory} is damaged: its generation folder {gen.name} is missing")
        # the header moved on while we looked (a writer saved, and is deleting this one): again
    raise OSError(f"{directory} changed {_PIN_TRIES} times while it was being opened; try again")


def _load(directory: Path, gen: Path, header: dict) -> Generation:
    if header["metric"] == "hamming":
        index = faiss.read_index_binary(str(gen / "index.faissbin"))
        itq = faiss.read_VectorTransform(str(gen / "itq.faissvt"))
    else:
        index, itq = faiss.read_index(str(gen / "index.faiss")), None
    src = sqlite3.connect((gen / "items.sqlite").resolve().as_uri() + "?mode=ro", uri=True)
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    try:
        src.backup(conn)
    finally:
        src.close()
    conn.executescript(SCHEMA)
    conn.commit()
    dead = conn.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]
    if index.ntotal - dead != header["count"]:
        raise ValueError(f"{directory}: index holds {index.ntotal - dead} vectors, header says {header['count']}")
    return Generation(header, index, itq, conn)


def write_generation(directory: Path, state: Generation) -> str:
    """Write ``state`` as a new generation and switch the header to it; return its name.

    Call with the write lock held. On any error nothing the header points at has changed.
    """
    directory = Path(directory)
    header = dict(state.header, updated_at=now())
    name = f"{GEN_PREFIX}{header['next_id']:012d}-{secrets.token_hex(4)}"
    gen = directory / name
    gen.mkdir()
    try:
        if header["metric"] == "hamming":
            faiss.write_index_binary(state.index, str(gen / "index.faissbin"))
            faiss.write_VectorTransform(state.itq, str(gen / "itq.faissvt"))
            _fsync_file(gen / "index.faissbin")
            _fsync_file(gen / "itq.faissvt")
        else:
            faiss.write_index(state.index, str(gen / "index.faiss"))
            _fsync_file(gen / "index.faiss")
        dst = sqlite3.connect(gen / "items.sqlite")
        try:
            state.conn.backup(dst)
        finally:
            dst.close()
        _fsync_file(gen / "items.sqlite")
        _fsync_dir(gen)
        header["generation"] = name
        tmp = directory / f".{HEADER}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(header, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / HEADER)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(gen, ignore_errors=True)
        remove_temp_headers(directory)
        raise
    state.header.update(header)
    return name


def remove_stale(directory: Path, current: str) -> None:
    """Delete generations other than ``current`` that no reader has pinned, and temp headers.

    Call with the write lock held (so no generation is being written but ours). A generation
    a reader is loading stays; the next writer deletes it.
    """
    directory = Path(directory)
    for old in directory.glob(f"{GEN_PREFIX}*"):
        if old.name == current or not old.is_dir():
            continue
        with claimed(old) as mine:
            if mine:
                shutil.rmtree(old, ignore_errors=True)
    remove_temp_headers(directory)


def remove_temp_headers(directory: Path) -> None:
    for stray in Path(directory).glob(_TMP_GLOB):
        stray.unlink(missing_ok=True)


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
