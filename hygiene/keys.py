"""Content and settings keys: what makes a finished photo "the same work".

One definition each, used by the batch manifest, the evaluation cache, the
catalog and the API:

* ``file_sha256`` / ``bytes_sha256``: the photo's bytes;
* ``code_version``: a hash of the hygiene sources that shape the pixels, so an
  upgrade redoes outputs the old code made;
* ``one_line``: an exception as the one-line text every report shows.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

# Orchestration modules: they decide which photos run, not what a photo becomes.
_NOT_PIXELS = frozenset({"batch.py", "batch_group.py", "pool.py", "keys.py", "store.py"})


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the hygiene package's sources that can change an output (12 hex digits)."""
    folder = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        if path.name in _NOT_PIXELS:
            continue
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def utf8_text(text: str) -> str:
    """``text`` safe for UTF-8 files: undecodable bytes of a file name (surrogate
    escapes) become ``\\xNN``, so a name that is not valid UTF-8 is still reported."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
