"""`evaluate --engine ray`: the photos' cleanup and their embedding run on Ray actors, into the cache.

The evaluation reads cleaned photos and embeddings from its disk cache
(``search.photo_cache``: a batch output folder of content-addressed cleaned
photos per cleaning settings key, and one ``.npy`` per photo, embedder and
variant). This fills both on Ray, in one Ray session: the cleanup with
``run_batch_ray`` (the job the evaluation would run on the local pool), then the
embedding with ``engines.embed_engine``'s actors (one embedder per actor, the same
``Embedder.embed`` as the local evaluation). The evaluation that follows finds
every photo cleaned and embedded, and only scores.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines.cluster import ray_connection
from engines.config import BatchConfig, RayConfig
from engines.embed_engine import embed_paths
from engines.job import BatchJob, BatchSummary
from engines.ray_engine import run_batch_ray
from hygiene.config import CleanConfig
from search.photo_cache import embedding_file

from .embedders import create_embedder


def clean_cache_on_ray(paths: Sequence[Path], config: CleanConfig, cache_dir: Path, key: str | None = None,
                       cfg: RayConfig = RayConfig(), progress: bool = True) -> BatchSummary:
    """Clean ``paths`` on Ray into the evaluation cache folder ``search.photo_cache`` uses for ``config``."""
    from search.photo_cache import CACHE_OUTPUT, clean_key

    folder = Path(cache_dir) / "clean" / (key or clean_key(config))  # = search.photo_cache's folder for the key
    job = BatchJob(None, folder, config, CACHE_OUTPUT, batch=BatchConfig(workers=cfg.num_cpus))
    return run_batch_ray(job, cfg, progress=progress, sources=list(paths), summary_files=False,
                         wait_for_folder=True)


def embed_cache_on_ray(photos: Sequence, embedder, cache_dir: Path, cfg: RayConfig = RayConfig(),
                       batch_size: int = 16, device: str | None = "cpu", progress: bool = True) -> int:
    """Embed on Ray the ``(Prepared, tag)`` pairs whose embedding is not cached yet; write them to the
    cache (atomically, by the driver). Returns how many were embedded; a photo that fails stays
    uncached (the evaluation reports it as it would locally)."""
    todo: dict[Path, Path] = {}
    for p, tag in photos:
        if p.ok and p.digest and p.image_path is not None:
            f = embedding_file(cache_dir, embedder, tag, p.digest)
            if not f.is_file():
                todo.setdefault(f, Path(p.image_path))
    files = list(todo)
    done = 0
    for f, vec in zip(files, embed_paths([todo[f] for f in files], create_embedder, embedder.name, cfg, batch_size, device,
                                         progress)):
        if isinstance(vec, np.ndarray):
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, vec)
            os.replace(tmp, f)
            done += 1
    return done


def evaluate_on_ray(queries, catalog, embedder, clean_config: CleanConfig, clean_catalog: bool, config,
                    cfg: RayConfig = RayConfig(), device: str | None = "cpu", progress: bool = True):
    """``search.evaluate.evaluate`` with the cleanup and the embedding on Ray (``embedder``: the driver's,
    for its name and cache key; the actors load their own). Same arguments, same result."""
    from search.evaluate import evaluate
    from search.photo_cache import clean_key, clean_photos, default_cache_dir, raw_photos

    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    key = config.cache_key or clean_key(clean_config)
    with ray_connection(cfg):  # one Ray session for both steps
        sides = [[q.path for q in queries]] + ([[c.path for c in catalog]] if clean_catalog else [])
        clean_cache_on_ray([p for side in sides for p in side], clean_config, cache, key, cfg, progress)
        pairs = [(p, "raw") for side in ([q.path for q in queries], [c.path for c in catalog])
                 for p in raw_photos(side)]
        for side in sides:  # all cleaned by now: this only reads the cache folder's manifest
            pairs += [(p, f"clean-{key}") for p in clean_photos(side, clean_config, cache, 1, False, key)]
        embed_cache_on_ray(pairs, embedder, cache, cfg, config.batch_size, device, progress)
    return evaluate(queries, catalog, embedder, clean_config, clean_catalog=clean_catalog, config=config,
                    progress=progress)
