"""The HTTP API over real HTTP: uvicorn on 127.0.0.1, httpx clients, u2netp weights."""
from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from badinputs import _png_with_header_size
from conftest_api import photo_bytes, running_server, sample_names
from PIL import Image

from api.settings import ApiSettings
from search.config import DEFAULT_EMBEDDER

pytestmark = pytest.mark.slow  # every server here loads the u2netp session

REPORT = "x-shelfready-report"


@pytest.fixture(scope="module")
def server():
    with running_server(workers=2, queue=32, timeout=600) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _big_jpeg(side: tuple[int, int] = (2400, 3200)) -> bytes:
    """A real photo enlarged, so cleaning it takes a while (for queue/timeout tests)."""
    image = Image.open(io.BytesIO(photo_bytes("dress.jpg"))).convert("RGB")
    buf = io.BytesIO()
    image.resize(side, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert "Traceback" not in r.text
    if code:
        assert body["error"] == code, body
    return body


# ---------------------------------------------------------------- probes, page, docs

def test_health_ready_page_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["model"] == "u2netp"
    assert body["catalog_items"] is None and body["pool"]["capacity"] == 34
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "<option selected>amazon</option>" in page.text
    assert "http://" not in page.text.replace("http://HOST", "")  # no external assets
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/clean", "/v1/check", "/v1/search", "/v1/catalog/items",
            "/v1/catalog/items/{item_id}", "/healthz", "/readyz"} <= set(spec["paths"])


# ---------------------------------------------------------------- /v1/clean and /v1/check

@pytest.mark.parametrize("name", ["dress.jpg", "shoes.jpg", "longsleeve.jpg"])
def test_clean_returns_image_and_report_header(client, name):
    r = client.post("/v1/clean", files={"photo": (name, photo_bytes(name))},
                    data={"size": "512", "format": "png", "preset": "shopify"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "no-store"
    header = r.headers[REPORT]
    assert header.isascii() and " " not in header.split('"reasons"')[0]  # compact ASCII JSON
    summary = json.loads(header)
    assert summary["status"] in ("cleaned", "needs_review") and summary["model"] == "u2netp"
    out = Image.open(io.BytesIO(r.content))
    assert out.format == "PNG" and out.mode == "RGB"
    assert summary["report"]["preset"] == "shopify"
    assert (summary["report"]["width"], summary["report"]["height"]) == out.size
    assert out.size[0] == out.size[1] <= 512
    arr = np.asarray(out)
    assert (arr[0, 0] == 255).all() and (arr[-1, -1] == 255).all()  # pure white corners
    assert summary["report"]["checks"]["white_background"]["passed"]


def test_clean_json_modes_and_transparency(client):
    photo = photo_bytes("hat.jpg")
    by_query = client.post("/v1/clean", params={"response": "json"}, files={"photo": ("a", photo)},
                           data={"size": "256", "transparent": "true", "format": "jpg"})
    by_accept = client.post("/v1/clean", headers={"Accept": "application/json"},
                            files={"photo": ("a", photo)}, data={"size": "256", "format": "webp"})
    for r in (by_query, by_accept):
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"report", "image_base64", "media_type"}
    a, b = by_query.json(), by_accept.json()
    assert a["media_type"] == "image/png"  # transparent forces PNG
    rgba = Image.open(io.BytesIO(base64.b64decode(a["image_base64"])))
    assert rgba.mode == "RGBA" and rgba.size == (256, 256)
    alpha = np.asarray(rgba.getchannel("A"))
    assert alpha[0, 0] == 0 and alpha.max() == 255  # transparent background, opaque product
    assert b["media_type"] == "image/webp"
    assert Image.open(io.BytesIO(base64.b64decode(b["image_base64"]))).format == "WEBP"


def test_check_reports_photo_as_is(client):
    r = client.post("/v1/check", files={"photo": ("x.jpg", photo_bytes("shirt.jpg"))},
                    data={"preset": "google"})
    assert r.status_code == 200, r.text
    report = r.json()["report"]
    assert report["preset"] == "google" and (report["width"], report["height"]) == (533, 400)
    assert report["checks"]["square"]["passed"] is False  # a raw 533x400 photo is not square
    assert report["ready"] is False and "square" in report["failed"]


def test_type_is_sniffed_from_bytes_not_name(client):
    # PNG bytes under a .txt name and a text/plain type: accepted
    png = _png(Image.open(io.BytesIO(photo_bytes("pants.jpg"))))
    r = client.post("/v1/check", files={"photo": ("notes.txt", png, "text/plain")})
    assert r.status_code == 200, r.text
    # text under a .jpg name and an image/jpeg type: refused
    r = client.post("/v1/check", files={"photo": ("photo.jpg", b"<html>hello</html>" * 10, "image/jpeg")})
    _error(r, 415, "unsupported_media_type")
    _error(client.post("/v1/clean", files={"photo": ("e.jpg", b"")}), 415)


def test_bomb_and_tiny_images_are_422_with_reason(client):
    bomb = _png_with_header_size(30000, 30000)  # 900 Mpx claimed in a few bytes
    body = _error(client.post("/v1/clean", files={"photo": ("b.png", bomb)}), 422)
    assert body["error"] == "image_too_large" and "30000" in body["detail"]
    tiny = _png(Image.new("RGB", (1, 1), (200, 10, 10)))
    body = _error(client.post("/v1/check", files={"photo": ("t.png", tiny)}), 422, "image_too_small")
    assert "1x1" in body["detail"].replace(" ", "") or "1 x 1" in body["detail"]
    broken = photo_bytes("skirt.jpg")[:3000]  # truncated JPEG
    _error(client.post("/v1/clean", files={"photo": ("s.jpg", broken)}), 422)


def test_option_validation_is_json_422(client):
    photo = photo_bytes()
    for data in ({"preset": "walmart"}, {"size": "8"}, {"size": "999999"}, {"fill": "3"},
                 {"format": "gif"}, {"transparent": "maybe"}):
        body = _error(client.post("/v1/clean", files={"photo": ("p", photo)}, data=data), 422,
                      "validation_error")
        assert next(iter(data)) in body["detail"]
    _error(client.post("/v1/clean", data={"preset": "amazon"}), 422, "validation_error")  # no photo


def test_errors_are_json(client):
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(client.get("/v1/clean"), 405, "method_not_allowed")
    garbled = client.post("/v1/clean", content=b"\x00" * 100,
                          headers={"content-type": "multipart/form-data; boundary=xx"})
    _error(garbled, 400, "bad_request")


def test_unhandled_exception_is_json_500_without_trace():
    def add_crash(app):
        @app.get("/v1/crash")
        async def crash():
            raise RuntimeError("secret internal state")

    with running_server(app_hook=add_crash, warmup=False) as srv, srv.client() as c:
        body = _error(c.get("/v1/crash"), 500, "internal_error")
        assert "secret" not in json.dumps(body)


# ---------------------------------------------------------------- catalog endpoints without catalog

def test_search_and_catalog_need_a_catalog(client):
    photo = photo_bytes()
    _error(client.post("/v1/search", files={"photo": ("p", photo)}), 409, "no_catalog")
    _error(client.post("/v1/search", data={"text": "red dress"}), 409, "no_catalog")
    _error(client.post("/v1/catalog/items", files={"photo": ("p", photo)}, data={"sku": "A1"}), 409, "no_catalog")
    _error(client.delete("/v1/catalog/items/3"), 409, "no_catalog")


# ---------------------------------------------------------------- auth, body limit, CORS

def test_api_keys_from_settings_and_file(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# storefront keys\nfile-key-2\n\n")
    with running_server(keys=("env-key-1",), keys_file=str(keys_file), warmup=False) as srv, srv.client() as c:
        photo = photo_bytes()
        body = _error(c.post("/v1/check", files={"photo": ("p", photo)}), 401, "unauthorized")
        assert "X-API-Key" in body["detail"]
        _error(c.post("/v1/check", files={"photo": ("p", photo)}, headers={"X-API-Key": "nope"}), 401)
        for key in ("env-key-1", "file-key-2"):
            r = c.post("/v1/check", files={"photo": ("p", photo)}, headers={"X-API-Key": key})
            assert r.status_code == 200, r.text
        # probes and the page stay open for load balancers and browsers
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
        assert c.get("/readyz").status_code == 200
        _error(c.delete("/v1/catalog/items/1"), 401)


def test_auth_off_without_keys(client):
    r = client.post("/v1/check", files={"photo": ("p", photo_bytes())})
    assert r.status_code == 200


def test_body_limit_by_header_and_by_stream():
    limit = 64 * 1024
    with running_server(max_body_bytes=limit, warmup=False) as srv, srv.client() as c:
        small = photo_bytes("dress.jpg")  # 18 KB: under the limit
        assert c.post("/v1/check", files={"photo": ("p", small)}).status_code == 200
        big = _big_jpeg((1200, 1600))
        assert len(big) > limit
        body = _error(c.post("/v1/check", files={"photo": ("p", big)}), 413, "payload_too_large")
        assert str(limit) in body["detail"]

        # chunked upload with no Content-Length: cut off while streaming
        boundary = "shelfreadyboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode()
        sent = {"bytes": 0}

        def stream():
            yield head + big[:1024]
            for i in range(1024, 50 * limit, 16 * 1024):  # far more than the limit, if allowed
                chunk = (big * 60)[i:i + 16 * 1024]
                sent["bytes"] += len(chunk)
                yield chunk

        # the server answers early, then lingers (reads and discards the rest) before it closes,
        # so the client reads the 413 rather than a connection reset
        r = c.post("/v1/check", content=stream(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        _error(r, 413, "payload_too_large")
        assert srv.pool()["in_flight"] == 0
        # the server is still fine afterwards
        assert c.post("/v1/check", files={"photo": ("p", small)}).status_code == 200


def test_cors_off_by_default_and_configurable(client):
    pre = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "x-api-key"}
    r = client.options("/v1/clean", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    with running_server(cors_origins=("https://shop.example",), warmup=False) as srv, srv.client() as c:
        r = c.options("/v1/clean", headers=pre)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        r = c.post("/v1/clean", headers={"Origin": "https://shop.example"},
                   files={"photo": ("p", photo_bytes())}, data={"size": "128"})
        assert r.status_code == 200
        assert "x-shelfready-report" in r.headers["access-control-expose-headers"].lower()
        r = c.options("/v1/clean", headers={**pre, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------- load: queue, timeout, concurrency

def test_full_queue_answers_503_with_retry_after():
    slow = _big_jpeg()
    with running_server(workers=1, queue=0, warmup=False) as srv, srv.client() as c, srv.client() as c2:
        results = {}
        t = threading.Thread(target=lambda: results.setdefault(
            "slow", c.post("/v1/clean", files={"photo": ("big.jpg", slow)}, data={"size": "3000"})))
        t.start()
        deadline = time.monotonic() + 30
        while srv.pool()["in_flight"] < 1:
            assert time.monotonic() < deadline, "slow request never admitted"
            time.sleep(0.005)
        r = c2.post("/v1/check", files={"photo": ("p", photo_bytes())})
        body = _error(r, 503, "busy")
        assert r.headers["retry-after"] == str(srv.settings.retry_after)
        assert "queue" in body["detail"]
        t.join(120)
        assert results["slow"].status_code == 200  # the admitted one was not harmed
        assert srv.pool()["refused"] == 1
        assert c2.post("/v1/check", files={"photo": ("p", photo_bytes())}).status_code == 200


def test_request_timeout_is_504_and_slot_is_freed():
    with running_server(timeout=0.05, workers=1, queue=4, warmup=False) as srv, srv.client() as c:
        body = _error(c.post("/v1/clean", files={"photo": ("p", _big_jpeg())}), 504, "timeout")
        assert "0.05" in body["detail"]
        deadline = time.monotonic() + 60
        while srv.pool()["in_flight"]:  # the thread finishes on its own and frees the slot
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert srv.pool()["timed_out"] == 1


def test_16_concurrent_requests_each_get_their_own_answer(client):
    names = (sample_names() * 2)[:16]
    sizes = [128 + 16 * i for i in range(16)]  # every request different

    def one(i):
        r = client.post("/v1/clean", params={"response": "json"},
                        files={"photo": (names[i], photo_bytes(names[i]))}, data={"size": str(sizes[i]), "format": "png"})
        return r

    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(one, range(16)))
    assert [r.status_code for r in answers] == [200] * 16
    # each answer is the same as the one for that photo alone (no cross-talk between requests)
    for i in (0, 5, 11):
        alone = one(i).json()
        got = answers[i].json()
        assert got["report"]["report"]["width"] <= sizes[i]
        assert got["report"]["report"]["product_box"] == alone["report"]["report"]["product_box"]
        assert got["image_base64"] == alone["image_base64"]


# ---------------------------------------------------------------- start-up failure, settings, CLI

def test_readyz_is_503_when_models_fail_to_load():
    with running_server(wait_ready=False, model="no-such-remover") as srv, srv.client() as c:
        deadline = time.monotonic() + 30
        while srv.app.state.engine.error is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = _error(c.get("/readyz"), 503, "not_ready")
        assert "no-such-remover" in body["detail"]
        r = c.post("/v1/check", files={"photo": ("p", photo_bytes())})
        _error(r, 503, "not_ready")
        assert "retry-after" in r.headers
        assert c.get("/healthz").status_code == 200


def test_settings_precedence_and_validation(tmp_path, monkeypatch):
    env = {"SHELFREADY_API_WORKERS": "3", "SHELFREADY_API_KEYS": "a, b", "SHELFREADY_API_TIMEOUT": "2.5",
           "SHELFREADY_API_CORS_ORIGINS": "https://a.example", "SHELFREADY_API_WARMUP": "off",
           "SHELFREADY_API_MEMORY_BUDGET_MB": "900"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = ApiSettings.from_env(workers=5, port=9001, catalog=None)  # flag > environment > default
    assert (s.workers, s.port, s.timeout, s.keys, s.warmup) == (5, 9001, 2.5, ("a", "b"), False)
    assert s.cors_origins == ("https://a.example",) and s.capacity == 5 + s.queue
    assert s.request_memory_bytes == 900 * 2**20 // 5 and s.read_timeout == 30.0
    assert ApiSettings(workers=1).workers == 1 and ApiSettings().workers == 3
    with pytest.raises(ValueError, match="frozen"):
        s.port = 1
    for name in env:
        monkeypatch.delenv(name)
    assert ApiSettings.from_env().all_keys() == frozenset()
    monkeypatch.setenv("SHELFREADY_API_PORT", "eighty")
    with pytest.raises(ValueError, match=r"^SHELFREADY_API_PORT='eighty' is not a valid int$"):
        ApiSettings.from_env()
    monkeypatch.delenv("SHELFREADY_API_PORT")
    with pytest.raises(ValueError, match="unknown API setting 'colour'"):
        ApiSettings.from_env(colour="red")
    with pytest.raises(ValueError, match="timeout"):
        ApiSettings(timeout=0)
    # onnxruntime threads per call: every core by default (measured best with spinning off)
    assert ApiSettings(workers=2).ort_threads == len(os.sched_getaffinity(0))
    assert ApiSettings(workers=2, threads=1).ort_threads == 1
    with pytest.raises(ValueError, match="cannot read API keys file"):
        ApiSettings(keys_file=str(tmp_path / "missing.txt")).all_keys()


# ---------------------------------------------------------------- catalog: add, search, delete

def test_catalog_add_search_delete_persisted(tmp_path):
    from search import Catalog

    folder = tmp_path / "catalog"  # the server starts an empty catalog here
    with running_server(catalog=str(folder), workers=2, timeout=600) as srv, srv.client() as c:
        ready = c.get("/readyz").json()
        assert ready["embedder"] == DEFAULT_EMBEDDER and ready["catalog_items"] == 0
        ids = {}
        for n, name in enumerate(["dress.jpg", "shoes.jpg", "hat.jpg", "pants.jpg"]):
            r = c.post("/v1/catalog/items", data={"sku": f"SKU-{name[:-4]}", "label": name[:-4]},
                       files={"photo": ("../../../tmp/evil-" + name, photo_bytes(name))})
            assert r.status_code == 201, r.text
            item = r.json()
            assert item["size"] == n + 1 and item["sku"] == f"SKU-{name[:-4]}"
            ids[name] = item["id"]
        assert len(set(ids.values())) == 4
        stored = sorted(p.name for p in (folder / "items").iterdir())
        assert len(stored) == 4 and not any("evil" in s for s in stored)  # names are content hashes
        assert not list(tmp_path.parent.glob("**/evil-*"))

        r = c.post("/v1/search", files={"photo": ("q", photo_bytes("shoes.jpg"))}, data={"k": "3"})
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["query"] == "image" and res["embedder"] == DEFAULT_EMBEDDER
        hits = res["hits"]
        assert len(hits) == 3 and hits[0]["sku"] == "SKU-shoes" and hits[0]["id"] == ids["shoes.jpg"]
        assert hits[0]["score"] > 0.99  # the very photo that was added
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

        _error(c.post("/v1/search", data={"text": "red shoes"}), 422, "text_search_unsupported")
        _error(c.post("/v1/search", data={"k": "3"}), 422, "invalid_option")
        _error(c.post("/v1/search", files={"photo": ("q", photo_bytes())}, data={"text": "x"}), 422)
        _error(c.post("/v1/search", files={"photo": ("q", photo_bytes())}, data={"k": "0"}), 422)
        _error(c.post("/v1/catalog/items", files={"photo": ("q", photo_bytes())}), 422)  # no sku
        _error(c.post("/v1/catalog/items", files={"photo": ("q", b"GIF89a" + b"\0" * 40)},
                      data={"sku": "X"}), 422)

        r = c.delete(f"/v1/catalog/items/{ids['shoes.jpg']}")
        assert r.status_code == 200 and r.json() == {"id": ids["shoes.jpg"], "deleted": True, "size": 3}
        _error(c.delete(f"/v1/catalog/items/{ids['shoes.jpg']}"), 404, "not_found")
        _error(c.delete("/v1/catalog/items/-1"), 422)
        r = c.post("/v1/search", files={"photo": ("q", photo_bytes("shoes.jpg"))}, data={"k": "5"})
        assert [h["sku"] for h in r.json()["hits"]].count("SKU-shoes") == 0
        assert len(r.json()["hits"]) == 3
    reopened = Catalog.open(folder)
    assert len(reopened) == 3 and reopened.get(ids["dress.jpg"]).sku == "SKU-dress"


def test_serve_command_refuses_bad_settings_in_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli.main import cli

    monkeypatch.setenv("SHELFREADY_API_TIMEOUT", "soon")
    r = CliRunner().invoke(cli, ["serve", "--port", "8123"])
    assert r.exit_code == 1 and "SHELFREADY_API_TIMEOUT='soon' is not a valid float" in r.output
    monkeypatch.delenv("SHELFREADY_API_TIMEOUT")
    r = CliRunner().invoke(cli, ["serve", "--api-keys-file", str(tmp_path / "none.txt")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(cli, ["serve", "--help"])
    assert r.exit_code == 0 and "--catalog" in r.output and "--api-keys-file" in r.output
