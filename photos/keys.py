"""Content and settings keys: what makes a finished photo "the same work".

One definition each, used by the batch manifest, the evaluation cache, the
catalog and the API:

* ``file_sha256`` / ``bytes_sha256``: the photo's bytes;
* ``one_line``: an exception as the one-line text every report shows.
"""
from __future__ import annotations

import hashlib
import os


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
