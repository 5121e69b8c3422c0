"""Loading the next chunk of photos while the caller works on this one.

An embedder uses every core while it runs a batch, but decoding the batch's photos (and
composing the views an evaluation embeds) is one thread's work between two batches, and
the cores wait for it. ``loaded_chunks`` runs ``load`` on a thread pool, a chunk ahead:
Pillow's decoders and resizes and OpenCV release the GIL, so the loads of a chunk run side
by side, and beside the embedding of the chunk before.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _call(load: Callable[[T], R], item: T) -> R | Exception:
    try:
        return load(item)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, which decides what is an error
        return exc


def loaded_chunks(load: Callable[[T], R], chunks: Iterable[Sequence[T]], threads: int) -> Iterator[list[R | Exception]]:
    """For each chunk, in order, ``[load(item) for item in chunk]`` with an exception in place of
    the result of a ``load`` that raised; the next chunk is loading while the caller has this one."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="shelfready-load") as pool:
        pending: list[Future] | None = None
        for chunk in chunks:
            submitted = [pool.submit(_call, load, item) for item in chunk]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = submitted
        if pending is not None:
            yield [f.result() for f in pending]


def load_all(load: Callable[[T], R], items: Sequence[T], threads: int) -> list[R | Exception]:
    """``[load(item) for item in items]`` on ``threads`` threads, in order (exceptions in place)."""
    return next(loaded_chunks(load, [items], threads), [])
