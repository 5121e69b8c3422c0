"""`shelfready serve`: run the HTTP API (api.app.create_app) under uvicorn.

Flags override SHELFREADY_API_* environment variables, which override the
defaults in api/settings.py. The app is built here and nowhere else in the CLI.
"""
from __future__ import annotations

import functools
import sys

import click

from api.settings import ApiSettings

from .options import runtime_flags

_D = ApiSettings.model_construct()  # the defaults, without reading the environment


@click.command()
@click.option("--host", default=None, help=f"Interface to bind [{_D.host}; env SHELFREADY_API_HOST].")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help=f"[{_D.port}]")
@click.option("--catalog", type=click.Path(file_okay=False), default=None,
              help="Catalog folder for /v1/search and /v1/catalog/items; an empty one is started "
                   "if it holds none [none: those answer 409].")
@click.option("--embedder", default=None, help="Embedder of a newly started catalog [search's default].")
@click.option("--model", default=None, help=f"Background remover [{_D.model}].")
@click.option("--fallback-model", default=None, metavar="NAME[,NAME]",
              help="Second remover, loaded at start-up, for the photos whose cut-out the gate does not "
                   "trust, e.g. u2net; several, comma-separated, are tried in turn "
                   "[none; isnet-imgly with --model cascade].")
@click.option("--workers", type=click.IntRange(0, 256), default=None,
              help="Inference threads [0 = one per core].")
@click.option("--queue", type=click.IntRange(0, 100_000), default=None,
              help=f"Requests that may wait for a worker; more answer 503 [{_D.queue}].")
@click.option("--timeout", type=click.FloatRange(0.001, None), default=None,
              help=f"Seconds per request before 504 [{_D.timeout:g}].")
@click.option("--max-body-mb", type=click.FloatRange(0.01, None), default=None,
              help=f"Largest request body in MiB; more answer 413 [{_D.max_body_bytes / 2**20:g}].")
@click.option("--read-timeout", type=click.FloatRange(0.001, None), default=None,
              help=f"Seconds a client may send less than {_D.min_read_rate} B/s of a request before "
                   f"408 [{_D.read_timeout:g}].")
@click.option("--max-connections", type=click.IntRange(1, None), default=None,
              help=f"Open connections; more answer 503 [{_D.max_connections}].")
@click.option("--memory-budget-mb", type=click.IntRange(64, None), default=None,
              help=f"MiB for the image work of all running requests; bigger photos are decoded "
                   f"smaller [{_D.memory_budget_mb}].")
@click.option("--api-keys-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="File with one API key per line; clients send X-API-Key [auth off without keys].")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Allow browser calls from this origin (repeatable) [CORS off].")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default=None, help=f"[{_D.log_level}]")
@functools.partial(runtime_flags, default=None)
def serve(host, port, catalog, embedder, model, fallback_model, workers, queue, timeout, max_body_mb, read_timeout,
          max_connections, memory_budget_mb, api_keys_file, cors_origins, log_level, runtime, precision):
    """Serve the HTTP API and the uploader page (http://HOST:PORT/, docs at /docs).

    Example: shelfready serve --port 8000 --catalog catalog/ --api-keys-file keys.txt
    """
    import uvicorn

    try:
        settings = ApiSettings.from_env(
            host=host, port=port, catalog=catalog, embedder=embedder, model=model, fallback_model=fallback_model,
            workers=workers, queue=queue,
            timeout=timeout, read_timeout=read_timeout, max_connections=max_connections,
            memory_budget_mb=memory_budget_mb, keys_file=api_keys_file, cors_origins=tuple(cors_origins),
            log_level=log_level, model_runtime=runtime, precision=precision,
            max_body_bytes=int(max_body_mb * 2**20) if max_body_mb is not None else None)
        settings.all_keys()  # unreadable keys file: fail now, with one line
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _tune_malloc(settings.malloc_arenas)
    from api.app import create_app
    from api.server import server_config

    uvicorn.Server(server_config(create_app(settings), settings)).run()


def _tune_malloc(arenas: int) -> None:
    """glibc: few arenas (M_ARENA_MAX), and image-sized buffers always from mmap.

    A fixed M_MMAP_THRESHOLD turns off glibc's sliding threshold, which otherwise
    rises to the largest buffer freed so far, after which big image buffers come
    from the heap and their memory is kept by the process after the request.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if arenas > 0:
            libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, 4 * 2**20)  # M_MMAP_THRESHOLD: 4 MiB and up mmapped, returned on free
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


if __name__ == "__main__":  # `python -m cli.serve_cmd`, used by the benches
    serve(sys.argv[1:])
