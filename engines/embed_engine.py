"""`catalog build --engine ray`: photos embedded by Ray actors (one embedder each) into Parquet shards.

The driver lists the photos (the same ``search.datasets`` lists as the local
build); each actor of a ``map_batches`` actor pool loads one embedder, then
reads, hashes and embeds ``EmbedConfig.batch_size`` photos at a time with the
same functions as the local build (``photos.io.load_image``,
``Embedder.embed``); the workers write the rows as Parquet shards
(``search.shard_index.COLUMNS`` plus ``error``), and ``shard_index`` builds the
catalog from them shard by shard.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import EngineError
from .attempts import attempts_counter, started
from .cluster import pool_size, ray_connection
from .config import RayConfig

SIDECAR = "shelfready-shards.json"  # beside the shards: the embedder that made them, its dim, the rows


class EmbedActor:
    """One Ray actor: one embedder, loaded once."""

    def __init__(self, factory, embedder: str, threads: int, device: str | None, attempts, tries: int) -> None:
        from removers.runtime import limit_threads

        limit_threads(threads)  # OpenCV / BLAS pools: the actor's share of the CPUs, as a clean actor's
        self.embedder = factory(embedder, device=device, threads=threads)
        self.attempts, self.tries = attempts, tries

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from photos.io import load_image
        from photos.keys import bytes_sha256, one_line
        from photos.store import read_path

        n = len(batch["path"])
        if started(self.attempts, str(batch["id"][0])) > self.tries:  # its actor died every time: give up
            lost = f"lost on Ray: its batch failed {self.tries} times (actor died, see Ray's log); run again"
            return {"id": batch["id"], "sku": batch["sku"], "label": batch["label"], "path": batch["path"],
                    "content_hash": np.array([None] * n, dtype=object), "vector": np.array([None] * n, dtype=object),
                    "error": np.array([lost] * n, dtype=object)}
        images, where, hashes, errors = [], [], [], []
        for i, path in enumerate(batch["path"]):
            digest, error = None, None
            try:
                data = read_path(path)  # a local file or an object (s3://...): read once
                digest = bytes_sha256(data)
                images.append(load_image(data))
                where.append(i)
            except (ValueError, OSError) as exc:  # as the local build: the photo is reported, not added
                error = one_line(exc)
            hashes.append(digest)
            errors.append(error or "")  # "" not None: a column of all None would reach Parquet as floats
        vectors = [None] * len(batch["path"])
        if images:
            for i, v in zip(where, self.embedder.embed(images)):
                vectors[i] = v.astype(np.float32).tolist()
        return {"id": batch["id"], "sku": batch["sku"], "label": batch["label"], "path": batch["path"],
                "content_hash": np.array(hashes, dtype=object), "vector": np.array(vectors, dtype=object),
                "error": np.array(errors, dtype=object)}


def _embedded(ray, rows: list[dict], factory, embedder: str, cfg: RayConfig, batch_size: int, device: str | None,
              progress: bool):
    """The Ray Dataset of ``rows`` (id, sku, label, path) embedded by an actor pool: EmbedActor's columns."""
    from ray.data import ActorPoolStrategy, DataContext

    if device in (None, "auto"):  # the cluster's nodes decide, not the driver's
        device = "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    size = pool_size(cfg, ray, -(-len(rows) // batch_size), gpus=device == "cuda")
    blocks = max(1, min(-(-len(rows) // batch_size), cfg.max_blocks))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    # Ray Data restarts dead actors and retries their batches by default; engines.attempts caps the retries
    return ds.map_batches(EmbedActor, fn_constructor_kwargs={
        "factory": factory, "embedder": embedder, "threads": cfg.actor_threads, "device": device,
        "attempts": attempts_counter(ray), "tries": cfg.task_retries + 1},
        batch_size=batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=size),
        num_cpus=cfg.actor_cpus, num_gpus=cfg.actor_gpus if device == "cuda" else None)


def embed_paths(paths, factory, embedder: str, cfg: RayConfig = RayConfig(), batch_size: int = 16,
                device: str | None = "cpu", progress: bool = True) -> list:
    """Embed the image files ``paths`` on Ray actors (each makes its embedder with
    ``factory(embedder, device=, threads=)``, e.g. ``search.create_embedder``); per path its
    float32 vector, or its one-line error."""
    import numpy as np

    rows = [{"id": i, "sku": "", "label": "", "path": str(p)} for i, p in enumerate(paths)]
    out: list = [None] * len(rows)
    if not rows:
        return out
    with ray_connection(cfg) as ray:
        ds = _embedded(ray, rows, factory, embedder, cfg, batch_size, device, progress)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for i, vec, err in zip(batch["id"], batch["vector"], batch["error"]):
                failed = isinstance(err, str) and err  # Ray makes a column of all-None errors NaN floats
                out[int(i)] = err if failed else "no vector" if vec is None else np.asarray(vec, dtype=np.float32)
    return out


def embed_to_shards(items, factory, embedder: str, shards: Path, cfg: RayConfig = RayConfig(), batch_size: int = 16,
                    device: str | None = "cpu", progress: bool = True, rows_per_shard: int = 50_000) -> int:
    """Embed ``items`` (sku, label, path: search.datasets.LabelledImage) on Ray into Parquet files under
    ``shards`` (``factory`` as ``embed_paths``'); rows written."""
    from photos import store

    uri = store.is_uri(shards)
    if uri:
        try:
            if store.list_files(shards, must_exist=False):
                raise EngineError(f"shard prefix {shards} is not empty; choose another or remove it")
        except store.StoreError as exc:
            raise EngineError(str(exc)) from None
    else:
        shards = Path(shards)
        if shards.exists() and any(shards.iterdir()):
            raise EngineError(f"shard folder {shards} is not empty; choose another or remove it")
    emb = factory(embedder, device="cpu")  # fail fast on a bad name; its canonical name and dim for the sidecar
    rows = [{"id": i, "sku": it.sku, "label": it.label,
             "path": it.path if store.is_uri(it.path) else str(Path(it.path).resolve())} for i, it in enumerate(items)]
    if not rows:
        raise EngineError("no photos to embed")
    with ray_connection(cfg) as ray:
        ds = _embedded(ray, rows, factory, embedder, cfg, batch_size, device, progress)
        side = json.dumps({"embedder": emb.name, "dim": emb.dim, "rows": len(rows)})
        if uri:  # each shard one object, through the same client as the rest (photos.store)
            fs, path = store.arrow_filesystem(shards)
            ds.write_parquet(path, filesystem=fs, min_rows_per_file=min(rows_per_shard, len(rows)))
        else:
            shards.mkdir(parents=True, exist_ok=True)
            ds.write_parquet(str(shards), min_rows_per_file=min(rows_per_shard, len(rows)))
    if uri:
        try:
            store.put(store.join(shards, SIDECAR), side.encode())
        except store.StoreError as exc:
            raise EngineError(str(exc)) from None
    else:
        (shards / SIDECAR).write_text(side)
    return len(rows)
