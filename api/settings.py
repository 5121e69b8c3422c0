"""Every default of the HTTP API lives here and nowhere else.

``ApiSettings`` is a pydantic-settings model. Precedence: an explicit keyword
(a `shelfready serve` flag) > environment variable ``SHELFREADY_API_<FIELD>`` >
the default below. Lists (keys, CORS origins) are comma-separated in the
environment. A bad value is a one-line ``ValueError`` naming the variable.
Image limits default to hygiene's LoadLimits so the CLI and the API refuse the
same files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hygiene.config import DEFAULT_PRESET, CleanConfig
from photos.config import LoadLimits
from removers.config import RuntimeConfig

ENV_PREFIX = "SHELFREADY_API_"

_LOAD = LoadLimits()
_KINDS = {int: "int", float: "float", bool: "bool"}


def _cores() -> int:
    from removers.runtime import given_cores

    return given_cores()


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid",
                                      case_sensitive=False)

    host: str = "127.0.0.1"
    port: int = 8000
    catalog: str | None = None  # catalog folder (created empty if it holds none); None = 409s
    embedder: str | None = None  # embedder of a catalog started by the server; None = search's default
    model: str = "u2netp"  # background remover loaded at start-up
    # second remover for the cut-outs the gate does not trust ("" = none; model "cascade"
    # brings its own; a comma-separated chain is tried in turn), loaded at start-up too
    # (hygiene.config.CleanConfig.fallback_model)
    fallback_model: str = ""
    preset: str = DEFAULT_PRESET  # preset used when a request names none
    workers: int = 0  # inference threads; 0 = one per core
    # onnxruntime intra-op threads per call; 0 = all cores, with spinning off (bench/api_load.py,
    # 2 cores: ratio to batch at 1/4/16 clients 0.99/0.94/0.94; cores // workers gave 0.55/1.01/1.00)
    threads: int = 0
    model_runtime: str = "auto"  # auto | onnxruntime | openvino (removers.config.RuntimeConfig.runtime)
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
    keys: Annotated[tuple[str, ...], NoDecode] = ()  # API keys; empty (and no keys_file) = auth off
    keys_file: str | None = None  # one API key per line, '#' comments
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()  # empty = no CORS headers at all
    log_level: str = "info"
    # slow clients: a request (head and body) must bring at least read_timeout * min_read_rate
    # bytes in every read_timeout seconds, or finish; else 408 and the connection is closed.
    # A connection that never sends a request is closed after read_timeout seconds.
    read_timeout: float = 30.0
    min_read_rate: int = 512  # bytes per second, averaged over read_timeout
    max_connections: int = 256  # open connections; the next ones get 503 and are closed
    # After answering before the request body was read (413 by Content-Length, 401, 503), keep
    # reading and discarding what the client still sends for up to this many seconds, so the
    # client reads the answer instead of a connection reset (a "lingering close"); 0 = off.
    close_linger: float = 5.0
    # Memory of the image work of all requests that run at once (decoding + cleaning), MiB.
    # Each running request gets memory_budget_mb / workers; a bigger photo is decoded at a
    # reduced size that fits (exact for JPEG, which decodes at 1/2, 1/4, 1/8 scale); a photo whose
    # mere decoding does not fit is refused with 422. Raise it with the worker count.
    memory_budget_mb: int = 1536
    malloc_arenas: int = 2  # glibc malloc arenas of the server process (0 = glibc default);
    # few arenas keep RSS flat when many threads allocate large image buffers
    warmup: bool = True  # run one inference per model before /readyz says ready

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ValueError(_one_line(exc, given=set(values))) from None

    @field_validator("keys", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: comma-separated
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @model_validator(mode="after")
    def _check(self) -> "ApiSettings":
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
        if self.read_timeout <= 0 or self.min_read_rate < 0:
            raise ValueError("read_timeout must be > 0 seconds and min_read_rate >= 0")
        if self.close_linger < 0:
            raise ValueError(f"close_linger must be >= 0 seconds, got {self.close_linger}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        if self.memory_budget_mb < 64:
            raise ValueError(f"memory_budget_mb must be >= 64, got {self.memory_budget_mb}")
        return self

    # ---- derived values -------------------------------------------------
    @property
    def pool_size(self) -> int:
        return self.workers or _cores()

    @property
    def ort_threads(self) -> int:
        return self.threads or _cores()

    @property
    def runtime(self) -> RuntimeConfig:
        """onnxruntime: each call may use every core, with spinning off, so concurrent calls share
        them. OpenVINO: one stream per inference thread (``pool_size``), the cores' threads split
        between them (removers.runtime.plan), so the workers' calls run side by side instead of
        queueing for one stream."""
        return RuntimeConfig(runtime=self.model_runtime, precision=self.precision,
                             threads=self.ort_threads, spin=False, streams=self.pool_size)

    def clean_config(self, **options) -> CleanConfig:
        """The cleanup settings of a request: this server's removers and runtime plus ``options``."""
        return CleanConfig(model=self.model, fallback_model=self.fallback_model, runtime=self.runtime, **options)

    @property
    def capacity(self) -> int:
        """Requests admitted at once: one per worker plus the waiting queue."""
        return self.pool_size + self.queue

    @property
    def request_memory_bytes(self) -> int:
        """Memory budget of one running request: the total shared by the workers."""
        return self.memory_budget_mb * 2**20 // self.pool_size

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
    def from_env(cls, **overrides: Any) -> "ApiSettings":
        """Defaults < SHELFREADY_API_* environment < overrides (None or () = not given)."""
        unknown = set(overrides) - set(cls.model_fields)
        if unknown:
            raise ValueError(f"unknown API setting {sorted(unknown)[0]!r}")
        return cls(**{k: v for k, v in overrides.items() if v is not None and v != ()})


def _one_line(exc: ValidationError, given: set[str]) -> str:
    """The first error of a ValidationError as one line, naming the variable it came from."""
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err.get("loc") else ""
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    field = ApiSettings.model_fields.get(name)
    env = ENV_PREFIX + name.upper()
    if field is not None and name not in given and env in {k.upper() for k in os.environ}:
        raw = next(v for k, v in os.environ.items() if k.upper() == env)
        kind = _KINDS.get(field.annotation, "value")
        return f"{env}={raw!r} is not a valid {kind}"
    if err.get("type") == "extra_forbidden":
        return f"unknown API setting {name!r}"
    return f"{name}: {msg}" if name else msg
