"""Joining a Ray cluster, or starting a local Ray for one job and stopping it after."""
from __future__ import annotations

import logging
from contextlib import contextmanager

from photos.keys import one_line
from removers.runtime import given_cores

from . import EngineError, require_ray
from .config import RayConfig

# A Ray started for one command treats its workers as the local engine treats its pool:
# at the user's priority (Ray's default nice 15 starves them on a busy machine), and
# without Ray's own memory monitor, which kills workers when the machine (not the job)
# is above 95 % of RAM: on a shared machine that killed photos other processes crowded
# out (the kernel's OOM killer still guards the machine).
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0, "memory_monitor_refresh_ms": 0}


@contextmanager
def ray_connection(cfg: RayConfig):
    """Yield the ``ray`` module connected as ``cfg`` says; a Ray this process already
    joined is reused and left running, as is a cluster given by address."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    common = {"include_dashboard": False, "logging_level": logging.WARNING, "configure_logging": True}
    try:
        if cfg.address:
            ray.init(address=cfg.address, **common)
        else:  # "local": never the RAY_ADDRESS of the environment (the CLI reads that at its edge)
            ray.init(address="local", num_cpus=cfg.num_cpus or given_cores(),
                     _system_config=LOCAL_SYSTEM_CONFIG, **common)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        where = f"the Ray cluster at {cfg.address}" if cfg.address else "a local Ray"
        raise EngineError(f"cannot start or join {where}: {one_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray) -> float:
    """CPUs of the alive nodes of the cluster (what an actor pool can be sized from)."""
    return float(ray.cluster_resources().get("CPU", 0.0))


def pool_size(cfg: RayConfig, ray, photos: int, gpus: bool = False) -> int:
    """Actors for a job: ``cfg.actors``, or as many as the cluster's CPUs hold (and, for ``gpus``
    actors, its GPUs: an actor that asks for a GPU no node has would never start); never more
    than ``photos`` (the units of work: photos, or batches of them)."""
    size = cfg.actors or int(cluster_cpus(ray) // cfg.actor_cpus)
    if gpus and not cfg.actors:
        size = min(size, int(ray.cluster_resources().get("GPU", 0.0) // cfg.actor_gpus))
    return max(1, min(size, photos))
