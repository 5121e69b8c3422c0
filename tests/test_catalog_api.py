"""One catalog, written at once by two `shelfready catalog add` processes and a running server;
the API's duplicate rule, stored paths and item text. Real processes, real HTTP, sample photos."""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest_api import running_server

from search import Catalog

pytestmark = pytest.mark.slow  # a server with u2netp + EfficientNet-Lite0, and CLI processes

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _post(client, photo: Path, sku: str, label: str = "", clean: bool = False):
    return client.post("/v1/catalog/items", data={"sku": sku, "label": label, "clean": str(clean).lower()},
                       files={"photo": (photo.name, photo.read_bytes())})


def test_two_cli_adds_and_api_adds_at_once_keep_every_photo_once(tmp_path):
    photos = sorted(SAMPLES.glob("*.jpg"))
    assert len(photos) == 12
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, part in ((a, photos[0:6]), (b, photos[4:10])):  # they share photos 4 and 5
        folder.mkdir()
        for p in part:
            shutil.copy(p, folder / p.name)
    via_api = photos[8:12] + [photos[0]]  # shares 8, 9 with b and 0 with a
    folder = tmp_path / "cat"
    answers: list[tuple[str, int, dict]] = []
    with running_server(catalog=str(folder), workers=2, queue=16, timeout=600) as srv:
        clis = [subprocess.Popen([sys.executable, "-m", "cli", "catalog", "add", str(folder), str(d)],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for d in (a, b)]

        def uploader(order: list[Path]) -> None:  # until both CLI runs are over, at least twice
            with srv.client() as c:
                rounds = 0
                while rounds < 2 or any(p.poll() is None for p in clis):
                    for p in order:
                        r = _post(c, p, f"API-{p.stem}", p.stem)
                        answers.append((p.name, r.status_code, r.json()))
                    rounds += 1
                    time.sleep(0.1)  # a shared machine: leave the CLI runs some CPU

        threads = [threading.Thread(target=uploader, args=(o,)) for o in (via_api, via_api[::-1])]
        for t in threads:
            t.start()
        outs = [p.communicate(timeout=900) for p in clis]
        for t in threads:
            t.join()
        for p, (out, err) in zip(clis, outs):
            assert p.returncode == 0, err
        counts = [tuple(map(int, re.search(r"added (\d+), already present (\d+), failed 0", out).groups()))
                  for out, _ in outs]
        assert [sum(c) for c in counts] == [6, 6]
        assert {s for _, s, _ in answers} <= {200, 201}, answers
        created = [n for n, s, _ in answers if s == 201]
        assert len(created) == len(set(created))  # the API added each photo at most once
        assert sum(c[0] for c in counts) + len(created) == 12  # every photo added exactly once overall

        cat = Catalog.open(folder)
        ids = cat.ids()
        by_hash = {cat.get(i).content_hash: cat.get(i) for i in ids}
        assert len(ids) == 12 and sorted(by_hash) == sorted(_sha(p) for p in photos)
        for name, _, body in answers:  # duplicates were answered with the one existing item
            assert body["id"] == by_hash[_sha(SAMPLES / name)].id and body["content_hash"] == _sha(SAMPLES / name)
        with srv.client() as c:
            assert c.get("/readyz").json()["catalog_items"] == 12  # the server saw the CLI's items
            for p in photos:  # each photo finds its own item first, through the running server
                r = c.post("/v1/search", data={"k": "1", "clean": "false"},
                           files={"photo": (p.name, p.read_bytes())})
                hit = r.json()["hits"][0]
                assert hit["id"] == by_hash[_sha(p)].id and hit["score"] > 0.99, (p.name, hit)
    for p in photos:
        item = by_hash[_sha(p)]
        if item.sku.startswith("API-"):  # stored by the server, relative to the catalog folder
            assert item.path == f"items/{_sha(p)[:24]}.jpg" and cat.resolve_path(item.path).is_file()
        else:
            assert Path(item.path).is_absolute() and Path(item.path).name == p.name


def test_api_duplicates_stored_paths_and_item_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the server's working folder: the catalog is given relative to it
    dress, hat = SAMPLES / "dress.jpg", SAMPLES / "hat.jpg"
    with running_server(catalog="shop/cat", workers=2, timeout=600) as srv, srv.client() as c:
        first = _post(c, dress, "Écharpe-été-🧣 靴", "robe d'été", clean=True)
        assert first.status_code == 201, first.text
        item = first.json()
        assert item["sku"] == "Écharpe-été-🧣 靴" and item["label"] == "robe d'été" and item["size"] == 1
        again = _post(c, dress, "OTHER", "other")  # same bytes, other sku, not cleaned: the same photo
        assert again.status_code == 200 and again.json() == item
        for field, bad in [("sku", "a\x1b[31mred"), ("label", "two\r\nlines"), ("sku", "nul\x00"),
                           ("label", "del\x7f"), ("sku", "csi\x9b2J")]:
            data = {"sku": "OK", "label": "", field: bad}
            r = c.post("/v1/catalog/items", data=data, files={"photo": (hat.name, hat.read_bytes())})
            assert r.status_code == 422 and r.json()["error"] == "invalid_text", r.text
            detail = r.json()["detail"]
            assert detail.startswith(f"{field} contains a control character") and detail.isprintable()
        assert c.get("/readyz").json()["catalog_items"] == 1
        stored = Catalog.open(tmp_path / "shop" / "cat").get(item["id"])
        assert stored.path == f"items/{_sha(dress)[:24]}.jpg"  # not shop/cat/items/...: the catalog's own
        assert [p.name for p in (tmp_path / "shop" / "cat" / "items").iterdir()] == [Path(stored.path).name]
        assert c.delete(f"/v1/catalog/items/{item['id']}").status_code == 200
        back = _post(c, dress, "back")
        assert back.status_code == 201 and back.json()["id"] == item["id"] + 1  # removed: a new item, new id
