"""The uvicorn configuration of the API: the HTTP protocol with slow-client and connection guards.

uvicorn has a keep-alive timeout but no read timeout: a client that trickles a
request head or body a byte at a time holds its connection (and its buffers)
for ever, and a client that opens connections and sends nothing is never
dropped. ``GuardedH11Protocol`` (uvicorn's h11 protocol plus a watchdog) adds:

* read timeout: while a request head or body is being received, each
  ``read_timeout`` seconds must bring at least ``read_timeout * min_read_rate``
  bytes or complete the request; otherwise the client gets a JSON 408 and the
  connection is closed. A connection that sent nothing is closed silently.
  Time the server itself is not reading (flow control, the app answering) never
  counts against the client.
* a connection cap: past ``max_connections`` open connections, a new
  connection's request is answered with a JSON 503 and the connection closed.
* a JSON 400 (not uvicorn's plain text) for a request h11 cannot parse, such
  as a malformed Content-Length.
* a lingering close: when the connection is closed after an answer sent before
  the client finished sending its body (413 by Content-Length, 401, 503), the
  server half-closes (sends FIN), then reads and discards the rest for up to
  ``close_linger`` seconds. Closing a socket with unread bytes makes the kernel
  send a reset, which can reach the client before it reads the answer: it then
  sees "connection reset" instead of the 413.

`shelfready serve` and the tests both build their server from ``server_config``.
"""
from __future__ import annotations

import json
import logging

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .security import send_error
from .settings import ApiSettings

log = logging.getLogger("shelfready.api")


def _raw_response(status: int, reason: str, error: str, detail: str,
                  extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 JSON error response that closes the connection."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
            f"content-length: {len(body)}", "cache-control: no-store", "connection: close",
            *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class _LingeringTransport:
    """The connection's transport, whose close() lingers while the client is mid-body.

    uvicorn closes ``self.transport`` from several places (response complete with
    Connection: close, errors, shutdown); wrapping it catches every one of them.
    """

    def __init__(self, transport, protocol: "GuardedH11Protocol") -> None:
        self._transport = transport
        self._protocol = protocol
        self.lingering = False
        self._timer = None

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.lingering:  # after the half-close nothing more may be written
            self._transport.write(data)

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            self.abandon()
            return
        linger = self._protocol.close_linger
        if (linger > 0 and self._protocol.conn.their_state is h11.SEND_BODY
                and self._transport.can_write_eof()):
            self.lingering = True
            self._transport.write_eof()  # FIN after the answer is flushed; reading goes on
            self._transport.resume_reading()
            self._timer = self._protocol.loop.call_later(linger, self.abandon)
            return
        self._transport.close()

    def abandon(self) -> None:
        """Stop lingering and close for good."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.close()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol with a read watchdog, a connection cap, JSON 400s and a
    lingering close."""

    read_timeout: float = 30.0
    min_read_bytes: int = 0
    max_connections: int = 256
    retry_after: int = 2
    close_linger: float = 5.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(_LingeringTransport(transport, self))
        self._window_bytes = 0
        self._watch = self.loop.call_later(self.read_timeout, self._check_progress)
        if len(self.connections) > self.max_connections:
            log.warning("%d open connections (limit %d): refusing a new one",
                        len(self.connections), self.max_connections)
            self.app = self._over_capacity

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:  # the answer is out: discard the rest of the body
            return
        self._window_bytes += len(data)
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.transport.abandon()  # cancels a linger timer; closing twice is harmless
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 could not parse the request (bad request line, header or Content-Length)."""
        if not self.transport.is_closing():
            self.transport.write(_raw_response(
                400, "Bad Request", "bad_request",
                "malformed HTTP request: bad request line, header or Content-Length"))
            self.transport.close()

    async def _over_capacity(self, scope, receive, send) -> None:
        await send_error(send, 503, "busy", "too many open connections; retry later",
                         {"Retry-After": str(self.retry_after), "Connection": "close"})

    # ---- watchdog ------------------------------------------------------------
    def _check_progress(self) -> None:
        self._watch = None
        if self.transport.is_closing():
            return
        received, self._window_bytes = self._window_bytes, 0
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        waiting_for_client = (self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
                              and not answering and not self.flow.read_paused)
        if waiting_for_client and received < max(1, self.min_read_bytes):
            self._time_out()
            return
        self._watch = self.loop.call_later(self.read_timeout, self._check_progress)

    def _time_out(self) -> None:
        started = self.conn.their_state is h11.SEND_BODY or bool(self.conn.trailing_data[0])
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() now says http.disconnect
            self.cycle.message_event.set()
        if started:  # part of a request arrived: tell the client why it is cut off
            log.info("request from %s timed out while being received", self.client)
            self.transport.write(_raw_response(
                408, "Request Timeout", "request_timeout",
                f"request not received in time: less than {max(1, self.min_read_bytes)} bytes "
                f"in {self.read_timeout:g} s"))
        self.transport.close()


def protocol_class(settings: ApiSettings) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol bound to these settings (uvicorn instantiates it per connection)."""
    return type("ShelfreadyH11Protocol", (GuardedH11Protocol,), {
        "read_timeout": settings.read_timeout,
        "min_read_bytes": int(settings.read_timeout * settings.min_read_rate),
        "max_connections": settings.max_connections,
        "retry_after": settings.retry_after,
        "close_linger": settings.close_linger,
    })


def server_config(app, settings: ApiSettings, **kwargs) -> uvicorn.Config:
    """uvicorn.Config of the API (one process; extra kwargs e.g. log_level for tests)."""
    options = dict(host=settings.host, port=settings.port, log_level=settings.log_level,
                   workers=1, access_log=settings.log_level == "debug", timeout_keep_alive=5,
                   lifespan="on")
    options.update(kwargs)
    return uvicorn.Config(app, http=protocol_class(settings), **options)
