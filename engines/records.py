"""The records of a batch whose OUT is in an object store (no rename, append or flock there):
one record object per photo (``RecordLog``), the run's lock as a lease renewed by conditional
PUTs (``Lease``), and the append-only logs of a run (``run_log``):

* ``RecordLog``: the manifest of an OUT that is a URI: one small object per
  finished photo (``.shelfready-manifest.d/<hash of its name>.json``, a re-run
  overwrites it: never two records of one photo), merged at the end of a run
  into ``.shelfready-manifest.jsonl`` (one PUT), whose merged records are then
  deleted;
* ``Lease``: one run per OUT at a time, a lock object created with a
  conditional PUT (``If-None-Match: *``); the holder renews it (``If-Match``
  its ETag) every ``lease_seconds / 4``; a lock not renewed for
  ``lease_seconds``, or taken on this host by a process that no longer exists,
  is stale and taken over (``If-Match`` the stale ETag: one taker wins).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path, PurePosixPath

from photos.store import (
    LockedError,
    StoreError,
    _call,
    _etag,
    _fs,
    delete,
    describe,
    is_uri,
    join,
    list_files,
    put,
    read_many,
)

RECORDS = ".d"  # the records of manifest M are the objects under M + RECORDS + "/"


LOCK_NAME = ".shelfready-lock"


class RecordLog:
    """The manifest of an OUT that is a URI: ``manifest`` (merged records, JSON lines) plus one
    object per photo recorded since the last merge."""

    def __init__(self, manifest: str) -> None:
        self.manifest = manifest
        self.folder = manifest + RECORDS

    def record_uri(self, rel: str) -> str:
        return join(self.folder, hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".json")

    def write(self, row: dict) -> None:
        put(self.record_uri(row["rel"]), json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))

    def _records(self) -> list[str]:
        return [e.uri for e in list_files(self.folder, must_exist=False) if e.uri.endswith(".json")]

    def read(self) -> tuple[dict[str, dict], list[str]]:
        """rel -> last record (merged ones, then the separate ones), and the separate ones' URIs."""
        done: dict[str, dict] = {}
        fs, path = _fs(self.manifest)
        text = _call(self.manifest, lambda: fs.cat_file(path) if fs.exists(path) else b"")
        for line in text.decode("utf-8", "replace").splitlines():
            take_record(done, line)
        records = self._records()
        for blob in read_many(records).values():
            take_record(done, blob.decode("utf-8", "replace"))
        return done, records

    def merge(self) -> None:
        """Write every record into the manifest (one PUT), then delete the records merged."""
        done, records = self.read()
        lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                        for r in sorted(done.values(), key=lambda r: r["rel"]))
        put(self.manifest, lines.encode("utf-8"))
        delete(records)  # killed before this: the records say again what the manifest says


def take_record(done: dict, text: str) -> None:
    """Put the manifest record in ``text`` (one JSON line) into ``done`` by its rel; a torn or
    foreign line is left out. Local manifests (engines.batch) and record objects read alike."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        return
    if isinstance(rec, dict) and "rel" in rec:
        done[rec["rel"]] = rec


def _alive_here(owner: dict) -> bool | None:
    """Whether the lock's owner process still runs (None: it ran on another host, unknown)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(owner.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


class Lease:
    """The lock of one OUT on an object store; ``acquire`` raises ``LockedError`` (or, with
    ``wait``, waits) while another live run holds it."""

    def __init__(self, out: str, lease_seconds: float) -> None:
        self.uri = join(out, LOCK_NAME)
        self.lease = lease_seconds
        self.owner = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self.etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps({**self.owner, "renewed": time.time()}).encode()

    def _put(self, **match) -> str:
        fs, path = _fs(self.uri)
        out = fs.pipe_file(path, self._body(), **match)
        return str((out or {}).get("ETag", "")).strip('"') if isinstance(out, dict) else ""

    def _try(self) -> bool:
        fs, path = _fs(self.uri)
        try:
            self.etag = self._put(mode="create")
            return True
        except FileExistsError:
            pass
        except Exception as exc:  # noqa: BLE001
            if "PreconditionFailed" not in repr(exc) and "412" not in str(exc):
                raise StoreError(describe(exc, self.uri)) from None
        try:  # held: is it stale?
            info = fs.info(path)
            owner = json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return False  # released meanwhile: try again
        except Exception as exc:  # noqa: BLE001
            raise StoreError(describe(exc, self.uri)) from None
        modified = info.get("LastModified")
        age = time.time() - modified.timestamp() if hasattr(modified, "timestamp") else 0.0
        stale = _alive_here(owner) is False or age > self.lease
        if not stale:
            self.holder = owner
            return False
        try:  # take over: only one taker's If-Match succeeds
            self.etag = self._put(IfMatch=_etag(info))
            return True
        except Exception:  # noqa: BLE001 - another run took it first
            return False

    def acquire(self, wait: bool = False) -> None:
        self.holder: dict = {}
        while not _call(self.uri, self._try):
            if not wait and self.holder:
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.holder.get("renewed", 0)))
                raise LockedError(f"{self.uri.rsplit('/', 1)[0]} is being written by another shelfready run "
                                  f"(host {self.holder.get('host')}, pid {self.holder.get('pid')}, lock renewed "
                                  f"{since}); wait for it or choose another OUT_DIR")
            time.sleep(min(5.0, self.lease / 4) if self.holder else 0.2)
        self._thread = threading.Thread(target=self._renew, name="shelfready-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                self.etag = self._put(IfMatch=self.etag) if self.etag else self._put()
            except Exception:  # noqa: BLE001 - the store is away, or another run took the lock over
                self.lost = True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        fs, path = _fs(self.uri)
        try:
            if json.loads(fs.cat_file(path)).get("id") == self.owner["id"]:
                fs.rm_file(path)
        except Exception:  # noqa: BLE001 - best effort: a lock left behind goes stale
            pass


class LogObject:
    """Lines of one run (the Ray engine's node log) gathered and PUT as one object on ``close``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.lines:
            try:
                put(self.uri, "".join(self.lines).encode("utf-8"))
            except StoreError:
                pass  # informational only


def run_log(out, name: str):
    """A file object appending to OUT/name on a local OUT; on a URI, one object per run
    (``OUT/<name>.d/<time>-<id>.jsonl``, written when the run ends)."""
    if is_uri(out):
        stem = PurePosixPath(name)
        return LogObject(join(out, f"{stem}.d/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"))
    return (Path(out) / name).open("a", encoding="utf-8")
