"""Every default of the HTTP API lives here and nowhere else.

Precedence: explicit keyword (a `shelfready serve` flag) > environment variable
``SHELFREADY_API_<FIELD>`` > the dataclass default. Image limits default to
hygiene's LoadLimits so the CLI and the API refuse the same files.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from hygiene.config import DEFAULT_PRESET, LoadLimits, RuntimeConfig

ENV_PREFIX = "SHELFREADY_API_"
log = logging.getLogger("shelfready.api")

_LOAD = LoadLimits()


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    catalog: str | None = None  # catalog folder (created empty if it holds none); None = 409s
    embedder: str | None = None  # embedder of a catalog started by the server; None = search's default
    model: str = "u2netp"  # background remover loaded at start-up
    preset: str = DEFAULT_PRESET  # preset used when a request names none
    workers: int = 0  # inference threads; 0 = one per core
    # onnxruntime intra-op threads per call; 0 = all cores, with spinning off (bench/api_load.py,
    # 2 cores: ratio to batch at 1/4/16 clients 0.99/0.94/0.94; cores // workers gave 0.55/1.01/1.00)
    threads: int = 0
    model_runtime: str = "auto"  # auto | onnxruntime | openvino (hygiene.config.RuntimeConfig.runtime)
    precision: str = "auto"  # auto | fp32 | bf16
    queue: int = 32  # requests allowed to wait for a worker; more answer 503
    timeout: float = 60.0  # seconds from admission to answer; past it 504
    retry_after: int = 2  # seconds, Retry-After header of a 503
    max_body_bytes: int = 20 * 1024 * 1024  # whole request body; past it 413
    max_pixels: int = _LOAD.max_pixels  # decompression-bomb guard
    min_side: int = _LOAD.min_side  # smaller images are refused (422)
    max_output_size: int = 4096  # largest `size` a client may ask for, px
    max_k: int = 100  # largest top-k of /v1/search
    default_k: int = 5
    keys: tuple[str, ...] = ()  # API keys; empty (and no keys_file) = auth off, with a warning
    keys_file: str | None = None  # one API key per line, '#' comments
    cors_origins: tuple[str, ...] = ()  # empty = no CORS headers at all
    log_level: str = "info"
    malloc_arenas: int = 2  # glibc malloc arenas of the server process (0 = glibc default);
    # few arenas keep RSS flat when many threads allocate large image buffers
    warmup: bool = True  # run one inference per model before /readyz says ready

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        if self.workers < 0 or self.threads < 0 or self.queue < 0:
            raise ValueError("workers, threads and queue must be >= 0")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError("default_k must be between 1 and max_k")
        if self.max_output_size < 64:
            raise ValueError("max_output_size must be >= 64")
        self.runtime  # noqa: B018 - validates model_runtime / precision

    # ---- derived values -------------------------------------------------
    @property
    def pool_size(self) -> int:
        return self.workers or _cores()

    @property
    def ort_threads(self) -> int:
        return self.threads or _cores()

    @property
    def runtime(self) -> RuntimeConfig:
        """Each call may use every core, with spinning off, so concurrent calls share them."""
        return RuntimeConfig(runtime=self.model_runtime, precision=self.precision,
                             threads=self.ort_threads, spin=False)

    @property
    def capacity(self) -> int:
        """Requests admitted at once: one per worker plus the waiting queue."""
        return self.pool_size + self.queue

    @property
    def load_limits(self) -> LoadLimits:
        return LoadLimits(max_bytes=self.max_body_bytes, max_pixels=self.max_pixels,
                          min_side=self.min_side)

    def all_keys(self) -> frozenset[str]:
        """Keys from settings plus the keys file (read once, at app creation)."""
        keys = set(k for k in self.keys if k)
        if self.keys_file:
            path = Path(self.keys_file).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read API keys file {path}: {exc.strerror}") from None
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.add(line)
        return frozenset(keys)

    # ---- construction ---------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "ApiSettings":
        """Defaults < SHELFREADY_API_* environment < overrides (None = not given)."""
        env = os.environ if env is None else env
        values: dict = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        for name, value in overrides.items():
            if name not in {f.name for f in dataclasses.fields(cls)}:
                raise ValueError(f"unknown API setting {name!r}")
            if value is not None and value != ():
                values[name] = value
        return cls(**values)


def _parse(f: dataclasses.Field, raw: str):
    kind = str(f.type)
    name = ENV_PREFIX + f.name.upper()
    try:
        if kind.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if kind == "bool":
            low = raw.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return low in ("1", "true", "yes", "on")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind}") from None
    return raw
