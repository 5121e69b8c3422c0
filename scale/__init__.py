"""Engines that run shelfready's own per-photo and per-batch functions on Ray Data.

``hygiene`` and ``search`` know nothing of Ray; this package imports them and
runs the same functions (``hygiene.batch.process_one``, the embedders) in Ray
actors, one model per actor. Ray is imported lazily, only when an engine here
runs, so the local engine needs nothing of it. Imported only by cli/ and bench/.
"""
from __future__ import annotations

INSTALL_HINT = "pip install shelfready[ray]"


class EngineError(RuntimeError):
    """The Ray engine cannot run (Ray missing, cluster unreachable); one line."""


def require_ray():
    """The ``ray`` module, or a one-line EngineError naming the install command."""
    try:
        import ray
        import ray.data  # noqa: F401  - the [data] extra
    except ImportError:
        raise EngineError(f"the ray engine needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    return ray
