"""Engines: running a per-photo function over many photos, on this machine or on Ray.

The local engine (batch.py: plan, manifest, recorder, summary; pool.py: the process pool;
batch_group.py: photos grouped for batched model calls) and the Ray engines (ray_engine.py:
the same per-photo step in Ray actors; embed_engine.py: embedders in Ray actors) run the
same library functions, so their outputs are byte-identical; only scheduling differs. Ray is
imported lazily, only when a Ray engine runs, so the local engine needs nothing of it.
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
