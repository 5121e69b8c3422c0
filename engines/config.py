"""Every default of the engines (the local pool and Ray) lives here and nowhere else."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayConfig:
    """How a job runs on Ray.

    ``address`` None starts a local Ray for the job (``num_cpus`` CPUs, 0 = all
    cores) and stops it afterwards; otherwise the job joins that cluster
    (``ray://...`` or ``host:port``) and leaves it running.
    """

    address: str | None = None
    num_cpus: int = 0  # local Ray only: CPUs it may use (0 = all cores)
    actor_cpus: float = 1.0  # CPUs each actor (one remover / embedder) reserves; fractions spread them
    actor_gpus: float = 1.0  # GPUs each actor asks for when its device is cuda
    actors: int = 0  # actor pool size; 0 = the cluster's CPUs // actor_cpus (at most one per photo)
    task_retries: int = 2  # a photo whose actor died is retried this often, then recorded as lost (engines.attempts)
    max_blocks: int = 20_000  # photos are split into at most this many blocks (one photo a block below)

    def __post_init__(self) -> None:
        if not self.actor_cpus > 0:
            raise ValueError(f"actor_cpus must be > 0, got {self.actor_cpus}")
        if self.actors < 0 or self.num_cpus < 0 or self.task_retries < 0:
            raise ValueError("actors, num_cpus and task_retries must be >= 0")

    @property
    def actor_threads(self) -> int:
        """Model threads of one actor: its share of the CPUs (at least one). Each actor is told it
        (``RuntimeConfig.threads``), so actors sharing a node do not each take every core, and
        removers.runtime.plan keeps OpenVINO from pinning them all to the node's first cores."""
        return max(1, round(self.actor_cpus))


@dataclass(frozen=True)
class BatchConfig:
    workers: int = 0  # 0 = one per core
    stop_grace: float = 5.0  # on the first Ctrl-C/SIGTERM: seconds the running photos may take to finish
    manifest_name: str = ".shelfready-manifest.jsonl"
    summary_json: str = "summary.json"
    summary_csv: str = "summary.csv"
    lock_lease: float = 60.0  # OUT on an object store: a run's lock not renewed for this long is stale (photos.store)
    extensions: tuple[str, ...] = (
        ".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff", ".gif",
    )
