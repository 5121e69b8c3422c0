"""Helpers of the API tests: a real uvicorn server on 127.0.0.1 in a thread.

Not a conftest (the lead owns tests/conftest.py): test modules import it.
The socket is bound here (port 0) and handed to uvicorn, so there is no race
for a free port. Model sessions are cached per process, so each extra server
costs little more than its warm-up.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import uvicorn

from api.app import create_app
from api.server import server_config
from api.settings import ApiSettings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


@dataclass
class RunningServer:
    url: str
    settings: ApiSettings
    app: object

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 300), **kwargs)

    def pool(self) -> dict:
        return self.app.state.pool.stats()


@contextmanager
def running_server(wait_ready: bool = True, app_hook=None, **settings) -> Iterator[RunningServer]:
    """Start create_app(ApiSettings(**settings)) under uvicorn, configured as `shelfready serve`
    configures it (api.server.server_config); stop it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = ApiSettings(port=port, **settings)
    app = create_app(config)
    if app_hook is not None:
        app_hook(app)
    server = uvicorn.Server(server_config(app, config, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    running = RunningServer(f"http://127.0.0.1:{port}", config, app)
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        if wait_ready:
            wait_until_ready(running.url)
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def wait_until_ready(url: str, seconds: float = 120, proc=None) -> dict:
    """/readyz's answer once it is 200. ``proc``: the server's process (a `shelfready serve`
    command): not listening yet is waited for, its exit is an error."""
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as c:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                r = c.get("/readyz")
            except httpx.TransportError:
                if proc is None:
                    raise
                r = None  # the command has not bound its port yet
            if r is not None and r.status_code == 200:
                return r.json()
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready: {r.text if r is not None else 'not listening'}")
            time.sleep(0.1)


def photo_bytes(name: str = "dress.jpg") -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLES.glob("*.jpg"))
