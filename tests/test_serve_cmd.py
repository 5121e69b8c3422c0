"""`shelfready serve` started as a command (the console script, a real process), as README's
"HTTP API" shows it: `shelfready serve --catalog catalog/ --api-keys-file keys.txt --workers 2`.
The other API tests build the app in-process; this one checks the flags reach it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest_api import photo_bytes, wait_until_ready

from cli.main import cli

pytestmark = pytest.mark.slow

SHELFREADY = Path(sys.executable).with_name("shelfready")  # the console script of this venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_maps_port_catalog_keys_file_and_workers(tmp_path):
    from search import Catalog

    shop = tmp_path / "shop"
    shop.mkdir()
    for name in ("dress.jpg", "hat.jpg", "shoes.jpg"):
        (shop / name).write_bytes(photo_bytes(name))
    catalog = tmp_path / "catalog"
    res = CliRunner().invoke(cli, ["catalog", "build", str(shop), "--out", str(catalog), "--embedder",
                                   "cnn:efficientnet_lite0", "--index", "flat", "--quiet"])
    assert res.exit_code == 0, res.output
    keys = tmp_path / "keys.txt"
    keys.write_text("# storefront keys\nk-one\nk-two  # the uploader's\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFREADY_API_")}
    env["SHELFREADY_API_WORKERS"] = "3"  # the flag overrides it (and 2 is not this 2-core machine's default)
    proc = subprocess.Popen([str(SHELFREADY), "serve", "--port", str(port), "--catalog", str(catalog),
                             "--api-keys-file", str(keys), "--workers", "2", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, 240, proc)
        with httpx.Client(base_url=url, timeout=300) as c:
            assert c.get("/readyz").json() == {"status": "ready"}  # no details without a key
            full = c.get("/readyz", headers={"X-API-Key": "k-two"}).json()
            assert full["catalog_items"] == 3 and full["pool"]["workers"] == 2 and full["model"] == "u2netp"
            # the keys file is enforced on /v1: none or a wrong key is 401, either listed key works
            photo = {"photo": ("hat.jpg", photo_bytes("hat.jpg"))}
            for headers in ({}, {"X-API-Key": "k-three"}, {"X-API-Key": "# storefront keys"}):
                r = c.post("/v1/check", files=photo, headers=headers)
                assert r.status_code == 401 and r.json()["error"] == "unauthorized", (headers, r.text)
            assert c.post("/v1/check", files=photo, headers={"X-API-Key": "k-one"}).status_code == 200
            # the given catalog is searched ...
            r = c.post("/v1/search", files=photo, data={"k": "2", "clean": "false"}, headers={"X-API-Key": "k-two"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["embedder"] == "cnn:efficientnet_lite0" and len(body["hits"]) == 2
            assert body["hits"][0]["sku"] == "hat" and body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
            # ... and added to, in its folder
            r = c.post("/v1/catalog/items", files={"photo": ("s.jpg", photo_bytes("skirt.jpg"))},
                       data={"sku": "SK-1", "label": "skirt"}, headers={"X-API-Key": "k-one"})
            assert r.status_code == 201, r.text
        with Catalog.open(catalog) as cat:
            assert len(cat) == 4 and {it.sku for it in cat.items()} == {"dress", "hat", "shoes", "SK-1"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        print(err[-3000:])  # shown by pytest when the test fails
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 (older uvicorn: 0)
    assert proc.returncode in (0, -signal.SIGTERM), err[-3000:]
    assert "Traceback" not in err
