"""Object storage (``s3://``, and whatever fsspec reads): the one module that knows it.

Local folders stay as they are (temp file + rename, flock, an appended manifest);
this module is the other side, for stores that have no rename, no append and no
flock (engines/records.py builds the batch's records and lock on it):

* ``list_files``: the objects under a prefix (key, size, ETag), one listing;
* ``read``: an object's bytes (refusing one larger than the limit from its size);
* ``put``: one whole object in one PUT: it appears whole or not at all;
* ``describe``: any error of the client as one line naming the URI and the cause.

Credentials, endpoint, region and retries are the client library's own
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``AWS_REGION``, ``AWS_MAX_ATTEMPTS``/``AWS_RETRY_MODE``,
~/.aws/config, s3fs's retries of throttled requests); nothing here reads them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .keys import one_line

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class StoreError(OSError):
    """A request to the object store failed (after the client's retries); ``str()`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LockedError(StoreError):
    """Another run holds the lease of this OUT."""


def is_uri(location) -> bool:
    """Whether ``location`` is an object-store URI (a str with a scheme), not a local path."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def location(text: str | os.PathLike) -> Path | str:
    """A command-line path: a URI (``s3://b/p``, trailing slashes dropped) stays a str; ``file://``
    and everything else is a local ``Path``."""
    text = os.fspath(text)
    if is_uri(text):
        if text.lower().startswith("file://"):
            return Path(text[len("file://"):])
        scheme, rest = text.split("://", 1)
        rest = "/".join(part for part in rest.split("/") if part)
        return f"{scheme.lower()}://{rest}"
    return Path(text)


def join(base: str, rel: str) -> str:
    return f"{base.rstrip('/')}/{rel.lstrip('/')}"


def relative(uri: str, base: str) -> str:
    """``uri`` below ``base``, as a posix relative path."""
    prefix = base.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise ValueError(f"{uri} is not under {base}")
    return uri[len(prefix):]


def inside(uri: str, base: str) -> bool:
    """Whether ``uri`` is ``base`` or below it (same scheme, bucket and prefix)."""
    return uri == base or uri.startswith(base.rstrip("/") + "/")


def _fs(uri: str):
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise StoreError(f"{uri}: cannot open this kind of URI ({one_line(exc)}); "
                         "pip install \"shelfready[ray]\" adds s3fs for s3://") from None
    loop = getattr(fs, "loop", None)  # an async client's event loop (s3fs runs one in a thread)
    if loop is not None and not getattr(loop, "_shelfready_quiet", False):
        loop.set_exception_handler(_quiet_connection_orphans)
        loop._shelfready_quiet = True
    return fs, path


def _quiet_connection_orphans(loop, context: dict) -> None:
    """When the endpoint goes away mid-request, aiohttp leaves a task whose connection error
    nobody awaits, and asyncio would print its traceback: the request itself already failed and
    is reported as one line (``describe``), so such an orphan is only logged at debug level."""
    import logging

    exc = context.get("exception")
    if isinstance(exc, OSError) and "never retrieved" in context.get("message", ""):
        logging.getLogger(__name__).debug("orphaned request task: %s", one_line(exc))
        return
    loop.default_exception_handler(context)


def _protocol(uri: str) -> str:
    return uri.split("://", 1)[0]


def _endpoint(uri: str) -> str:
    try:
        fs, _ = _fs(uri)
        client = getattr(fs, "s3", None)
        url = getattr(getattr(client, "meta", None), "endpoint_url", None)
        return url or (getattr(fs, "endpoint_url", None) or "the store")
    except Exception:  # noqa: BLE001
        return "the store"


def describe(exc: BaseException, uri: str) -> str:
    """``exc`` (from fsspec, s3fs or botocore) as one line naming ``uri`` and the cause."""
    if isinstance(exc, StoreError):
        return exc.message
    text = one_line(exc)
    low = text.lower()
    name = type(exc).__name__
    chain = exc
    names = set()
    while chain is not None:
        names.add(type(chain).__name__)
        chain = chain.__cause__ or chain.__context__
    if "NoCredentialsError" in names or "unable to locate credentials" in low:
        cause = ("no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                 "or give the node a role)")
    elif "nosuchbucket" in low or "bucket does not exist" in low or "specified bucket" in low:
        cause = "bucket not found"
    elif any(k in low for k in ("invalidaccesskeyid", "signaturedoesnotmatch", "access key id",
                                 "signature we calculated", "invalidtoken", "expiredtoken")):
        cause = f"credentials refused ({text})"
    elif isinstance(exc, PermissionError) or "accessdenied" in low or "access denied" in low or "forbidden" in low:
        cause = f"access denied ({text})"
    elif ("EndpointConnectionError" in names or "ConnectTimeoutError" in names or "ClientConnectorError" in names
          or "could not connect" in low or "connect call failed" in low or "connection refused" in low
          or "cannot connect" in low):
        cause = f"cannot reach the endpoint {_endpoint(uri)} ({text})"
    elif any(k in low for k in ("slowdown", "reduce your request rate", "throttl", "too many requests",
                                "serviceunavailable", "service unavailable", "internalerror", "503", "500")):
        cause = f"the store failed or throttled the request after retries ({text})"
    elif isinstance(exc, FileNotFoundError):
        cause = "not found"
    else:
        cause = f"{name}: {text}" if name not in text else text
    return f"{uri}: {cause}"


def _call(uri: str, func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - every client error becomes one line
        raise StoreError(describe(exc, uri)) from None


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class Entry:
    uri: str
    size: int
    etag: str  # changes whenever the object's bytes do (an MD5 or a multipart hash on S3)


def _etag(info: dict) -> str:
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("md5") or ""
    if not tag:  # a store without ETags: its size and time stand for its bytes
        tag = f"{info.get('size')}-{info.get('LastModified') or info.get('mtime') or info.get('updated')}"
    return str(tag).strip('"')


def list_files(uri: str, must_exist: bool = True) -> list[Entry]:
    """The objects under the prefix ``uri`` (recursively, sorted by URI).

    A missing bucket is an error; an empty or missing prefix gives [] (or, with ``must_exist``,
    an error saying no object is there)."""
    fs, path = _fs(uri)
    bucket = path.split("/", 1)[0]

    def find() -> dict:
        fs.invalidate_cache()
        if not fs.exists(bucket):
            raise StoreError(f"{uri}: bucket not found")
        return fs.find(path, detail=True)

    found = _call(uri, find)
    scheme = _protocol(uri)
    out = []
    for key, info in found.items():
        if info.get("type", "file") != "file":
            continue
        out.append(Entry(f"{scheme}://{key.lstrip('/')}", int(info.get("size") or 0), _etag(info)))
    if not out and must_exist:
        raise StoreError(f"{uri}: no objects under this prefix")
    return sorted(out, key=lambda e: e.uri)


def read(uri: str) -> bytes:
    """An object's bytes in one GET (s3fs would first ask its size, HEAD, to split a big one)."""
    fs, path = _fs(uri)
    if _protocol(uri) in ("s3", "s3a"):
        return _call(uri, fs.cat_file, path, max_concurrency=1)
    return _call(uri, fs.cat_file, path)


def read_many(uris: list[str]) -> dict[str, bytes]:
    """Several objects at once (the client's concurrent requests)."""
    if not uris:
        return {}
    fs, _ = _fs(uris[0])
    paths = {fs._strip_protocol(u): u for u in uris}
    got = _call(uris[0], fs.cat, list(paths), on_error="raise")
    return {paths[fs._strip_protocol(k)]: v for k, v in got.items()}


def put(uri: str, data: bytes) -> None:
    """One whole object in one PUT (a reader sees the old object or the new one, never a part)."""
    fs, path = _fs(uri)
    _call(uri, fs.pipe_file, path, bytes(data))


def delete(uris: list[str]) -> None:
    if not uris:
        return
    fs, _ = _fs(uris[0])
    _call(uris[0], fs.rm, [fs._strip_protocol(u) for u in uris])


def file_uri_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the manifest


# --------------------------------------------------------------------------- one run per OUT


# --------------------------------------------------------------------------- run logs


# --------------------------------------------------------------------------- other readers


def open_input(uri: str):
    """A seekable binary file object reading ``uri`` with ranged GETs (Parquet shards)."""
    fs, path = _fs(uri)
    return _call(uri, fs.open, path, "rb")


def read_path(path) -> bytes:
    """The bytes of a local file or of an object."""
    if is_uri(path):
        return read(path)
    with open(path, "rb") as fh:
        return fh.read()


def arrow_filesystem(uri: str):
    """(pyarrow filesystem, path in it) for ``uri``: fsspec's client wrapped for pyarrow/Ray Data, so
    Parquet written by Ray goes through the same client, credentials and endpoint as the rest."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = _fs(uri)
    return PyFileSystem(FSSpecHandler(fs)), path


# --------------------------------------------------------------------------- local copies


def staged_path(uri: str, folder: Path) -> Path:
    """Where ``stage_*`` keeps the local copy of ``uri``: FOLDER/<scheme>/<bucket>/<key>."""
    scheme, rest = uri.split("://", 1)
    return Path(folder) / scheme / rest


def stage_prefix(uri: str, folder: Path, extensions: tuple[str, ...]) -> Path:
    """A local mirror of the files with ``extensions`` under ``uri`` (for ``evaluate``, whose report
    shows the photos): an object is downloaded again only when its ETag changed. Returns the mirror."""
    from .save import write_bytes_atomic

    root = staged_path(uri, folder)
    index_file = root / ".shelfready-etags.json"
    try:
        known = json.loads(index_file.read_text()) if index_file.is_file() else {}
    except (OSError, ValueError):
        known = {}
    entries = [e for e in list_files(uri) if PurePosixPath(e.uri).suffix.lower() in extensions
               and not any(p.startswith(".") for p in relative(e.uri, uri).split("/"))]
    todo = [e for e in entries if known.get(e.uri) != e.etag or not staged_path(e.uri, folder).is_file()]
    for start in range(0, len(todo), 64):
        chunk = todo[start:start + 64]
        got = read_many([e.uri for e in chunk])  # concurrent GETs
        for e in chunk:
            write_bytes_atomic(staged_path(e.uri, folder), got[e.uri])
            known[e.uri] = e.etag
    root.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(index_file, json.dumps(known).encode())
    return root


def stage_file(uri: str, folder: Path, sha256: str = "") -> Path:
    """A local copy of one object; kept while its bytes have the ``sha256`` given."""
    from .keys import file_sha256
    from .save import write_bytes_atomic

    target = staged_path(uri, folder)
    if sha256 and target.is_file() and file_sha256(target) == sha256:
        return target
    write_bytes_atomic(target, read(uri))
    return target
