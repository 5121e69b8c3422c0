"""`evaluate --engine ray`: the photos' cleanup runs on Ray actors, into the evaluation cache.

The evaluation's cleaned photos live in a batch output folder of the cache
(``search.photo_cache``: content-addressed outputs, one folder per cleaning
settings key). This fills that folder with ``run_batch_ray``, the same job the
evaluation would run on the local pool; the evaluation that follows finds every
photo done in the folder's manifest and only embeds and scores (embedding stays
on the driver: it is ~10x cheaper than the cleanup per photo).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hygiene.batch import BatchJob, BatchSummary
from hygiene.config import BatchConfig, CleanConfig

from .config import RayConfig
from .ray_engine import run_batch_ray


def clean_cache_on_ray(paths: Sequence[Path], config: CleanConfig, cache_dir: Path, key: str | None = None,
                       cfg: RayConfig = RayConfig(), progress: bool = True) -> BatchSummary:
    """Clean ``paths`` on Ray into the evaluation cache folder ``search.photo_cache`` uses for ``config``."""
    from search.photo_cache import CACHE_OUTPUT, clean_key

    folder = Path(cache_dir) / "clean" / (key or clean_key(config))  # = search.photo_cache's folder for the key
    job = BatchJob(None, folder, config, CACHE_OUTPUT, batch=BatchConfig(workers=cfg.num_cpus))
    return run_batch_ray(job, cfg, progress=progress, sources=list(paths), summary_files=False,
                         wait_for_folder=True)
