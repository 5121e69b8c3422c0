"""Slow clients, connection flood, malformed requests, key-less probes: raw sockets against a
real uvicorn server configured as `shelfready serve` configures it (small limits, short waits)."""
from __future__ import annotations

import json
import select
import socket
import time

import pytest
from conftest_api import photo_bytes, running_server

pytestmark = pytest.mark.slow  # every server here loads the u2netp session

READ_TIMEOUT = 1.5  # seconds; the tests' trickles send 1 byte every 0.5 s


@pytest.fixture(scope="module")
def server():
    with running_server(workers=1, queue=4, read_timeout=READ_TIMEOUT, min_read_rate=64,
                        max_connections=6, warmup=False) as srv:
        yield srv


def _connect(srv) -> socket.socket:
    host, port = srv.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Read until the server closes or one full response arrived: (status, headers, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        return 0, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _closed(sock: socket.socket, timeout: float = 10) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _json_error(status: int, headers: dict, body: bytes, want: int, code: str) -> dict:
    assert status == want, (status, body)
    assert headers["content-type"].startswith("application/json")
    parsed = json.loads(body)
    assert set(parsed) == {"error", "detail"} and parsed["error"] == code, parsed
    return parsed


def _multipart_head(length: int) -> bytes:
    return (f"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            "Content-Type: multipart/form-data; boundary=XX\r\n\r\n").encode()


def test_trickled_body_gets_json_408_and_is_closed(server):
    sock = _connect(server)
    sock.sendall(_multipart_head(10_000))
    started = time.monotonic()
    payload = b'--XX\r\nContent-Disposition: form-data; name="photo"; filename="p"\r\n\r\n'
    sock.settimeout(0.5)
    answer = b""
    for byte in payload:  # 1 byte every 0.5 s: far below 64 B/s
        try:
            sock.send(bytes([byte]))
            answer = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if answer:
            break
        assert time.monotonic() - started < 20, "trickle never cut off"
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"] == "request_timeout"
    # not cut before one read period (a busy machine can only make the cut later, never earlier);
    # how late is bounded by the loop's deadline, not timed here (a loaded machine stretches it)
    assert elapsed >= 0.9 * READ_TIMEOUT
    assert _closed(sock)
    sock.close()
    with server.client() as c:  # the server is fine afterwards
        assert c.get("/healthz").status_code == 200


def test_trickled_request_head_gets_408(server):
    sock = _connect(server)
    started = time.monotonic()
    answer = b""
    sock.settimeout(0.5)
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
        try:
            sock.send(bytes([byte]))
            answer = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if answer:
            break
        assert time.monotonic() - started < 20, "trickle never cut off"
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    sock.close()


def test_silent_connection_is_closed(server):
    sock = _connect(server)
    started = time.monotonic()
    assert _closed(sock, timeout=30)  # closed without an answer: it asked nothing (30 s: a deadline, not a timing)
    assert time.monotonic() - started >= 0.9 * READ_TIMEOUT  # after a read period, not at once
    sock.close()


def test_steady_slow_upload_is_not_cut(server):
    """Above the minimum rate the request goes through, however long it takes in total."""
    photo = photo_bytes("dress.jpg")[:2000]  # a truncated JPEG: a fast 422, after the upload
    body = (b'--XX\r\nContent-Disposition: form-data; name="photo"; filename="p"\r\n\r\n'
            + photo + b"\r\n--XX--\r\n")
    chunks = [body[i:i + 100] for i in range(0, len(body), 100)]
    assert len(chunks) * 0.25 > 2 * READ_TIMEOUT  # the upload spans several read periods (by design)
    sock = _connect(server)
    sock.sendall(_multipart_head(len(body)))
    for chunk in chunks[:-1]:  # 100 bytes every 0.25 s = 400 B/s > 64 B/s, ~5 s in all
        sock.sendall(chunk)
        time.sleep(0.25)
        # the server has answered nothing yet (no 408, no early close) while the body keeps coming
        ready, _, _ = select.select([sock], [], [], 0)
        assert not ready, sock.recv(65536)
    sock.sendall(chunks[-1])
    status, headers, payload = _read_response(sock, timeout=60)
    _json_error(status, headers, payload, 422, "truncated_image")
    sock.close()


def test_connection_cap_answers_json_503(server):
    held = [_connect(server) for _ in range(6)]  # the cap
    try:
        time.sleep(0.2)
        extra = _connect(server)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_response(extra)
        _json_error(status, headers, body, 503, "busy")
        assert headers.get("retry-after") == "2" and _closed(extra)
        extra.close()
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    ok = _connect(server)  # below the cap again
    ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _read_response(ok)[0] == 200
    ok.close()


@pytest.mark.parametrize("length", [b"abc", b"-5", b"12, 13", b"1e3"])
def test_malformed_content_length_is_json_400(server, length):
    sock = _connect(server)
    sock.sendall(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\nhello")
    status, headers, body = _read_response(sock)
    detail = _json_error(status, headers, body, 400, "bad_request")["detail"]
    assert "Content-Length" in detail and "Traceback" not in detail
    assert _closed(sock)
    sock.close()


def test_readyz_minimal_with_keys_full_with_a_key(tmp_path):
    from search import Catalog

    folder = tmp_path / "catalog"
    Catalog.create(folder, "cnn:efficientnet_lite0", 1280)
    with running_server(keys=("k-123",), catalog=str(folder), workers=1, warmup=False) as srv, \
            srv.client() as c:
        assert c.get("/readyz").json() == {"status": "ready"}  # no catalog size, no pool
        assert c.get("/readyz", headers={"X-API-Key": "wrong"}).json() == {"status": "ready"}
        full = c.get("/readyz", headers={"X-API-Key": "k-123"}).json()
        assert full["catalog_items"] == 0 and full["model"] == "u2netp" and "pool" in full
        # the key is declared in the OpenAPI schema (so /docs can send it) ...
        spec = c.get("/openapi.json").json()
        schemes = spec["components"]["securitySchemes"]
        assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                           "description": "one of the server's API keys"}
        for path in ("/v1/clean", "/v1/check", "/v1/search", "/v1/catalog/items"):
            assert spec["paths"][path]["post"]["security"] == [{"APIKeyHeader": []}]
        assert "security" not in spec["paths"]["/readyz"]["get"]
        # ... and still refused before the body is read: 401 to a 30 MB upload at once
        sock = _connect(srv)
        sock.sendall(_multipart_head(30_000_000))
        status, headers, body = _read_response(sock)
        _json_error(status, headers, body, 401, "unauthorized")
        sock.close()
        r = c.post("/v1/check", files={"photo": ("p", photo_bytes())}, headers={"X-API-Key": "k-123"})
        assert r.status_code == 200, r.text


def test_no_security_scheme_without_keys(server):
    with server.client() as c:
        spec = c.get("/openapi.json").json()
        assert "securitySchemes" not in spec.get("components", {})
        body = c.get("/readyz").json()
        assert body["status"] == "ready" and body["pool"]["workers"] == 1


def test_memory_budget_shrinks_big_photos_and_refuses_undecodable_ones():
    from test_io_budget import _big_jpeg, png16_rgba

    # 64 MiB for one worker: photos are cleaned at <= 64 MiB / 32 B = 2.1 MP
    with running_server(workers=1, memory_budget_mb=64, warmup=False) as srv, srv.client() as c:
        r = c.post("/v1/check", files={"photo": ("p", _big_jpeg((3000, 2000)))})
        assert r.status_code == 200, r.text
        report = r.json()["report"]
        assert report["width"] * report["height"] <= 64 * 2**20 // 32 and report["width"] >= 1700
        r = c.post("/v1/clean", files={"photo": ("p", _big_jpeg((3000, 2000)))})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        # a 16-bit RGBA PNG of 4200x4200 needs 67 MiB just to decode: refused from its header
        r = c.post("/v1/clean", files={"photo": ("p", png16_rgba(4200, 4200))})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "image_too_large" and "memory" in body["detail"]
        assert srv.pool()["in_flight"] == 0
