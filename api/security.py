"""Request guards that run before any endpoint: API keys and the body size limit.

Both are plain ASGI middleware so they apply to every route alike and refuse a
request before the body is parsed. The size limit is enforced while the body
streams in (Content-Length is checked first, then bytes are counted), so an
unbounded or lying upload is cut off at the limit instead of being buffered.
"""
from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

KEY_HEADER = "x-api-key"
# Paths served without a key: probes, docs and the uploader page (it asks for a key).
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect",
                          "/openapi.json", "/favicon.ico"})
DOCS_ASSETS = "/docs-assets"  # Swagger UI's own static files, public like /docs


async def send_error(send: Send, status: int, error: str, detail: str,
                     headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"cache-control", b"no-store")]
    for k, v in (headers or {}).items():
        raw.append((k.lower().encode("latin-1"), v.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def key_matches(given: bytes, keys) -> bool:
    """True when `given` is one of `keys`; compares against every key in constant time."""
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key if isinstance(key, bytes) else key.encode())
    return ok


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v
    return None


class ApiKeyMiddleware:
    """401 unless X-API-Key matches one of the keys. No keys = auth off."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["method"] == "OPTIONS" \
                or scope["path"] in PUBLIC_PATHS or scope["path"].startswith(DOCS_ASSETS + "/"):
            await self.app(scope, receive, send)
            return
        given = _header(scope, KEY_HEADER.encode()) or b""
        if not key_matches(given, self.keys):
            detail = "missing X-API-Key header" if not given else "invalid API key"
            await send_error(send, 401, "unauthorized", detail, {"WWW-Authenticate": "ApiKey"})
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 when a request body is, or turns out to be, larger than max_bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        detail = f"request body larger than {limit} bytes"
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_error(send, 400, "bad_request", "invalid Content-Length header")
                return
            if size > limit:
                await send_error(send, 413, "payload_too_large", detail, {"Connection": "close"})
                return

        state = {"seen": 0, "over": False, "started": False}

        async def limited_receive() -> Message:
            if state["over"]:  # never hand the app more bytes once over the limit
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    raise BodyTooLarge(detail)
            return message

        async def guarded_send(message: Message) -> None:
            # If the app turned the cut-off into its own error, answer 413 instead.
            if state["over"]:
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await send_error(send, 413, "payload_too_large", detail, {"Connection": "close"})
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not state["started"]:
                state["started"] = True
                await send_error(send, 413, "payload_too_large", detail, {"Connection": "close"})


class BodyTooLarge(Exception):
    """Raised inside receive() once the streamed body passes the limit."""
