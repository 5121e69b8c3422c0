"""The models and catalog one server process holds, and the blocking work on them.

Everything here is synchronous and runs on the inference pool (api/limits.py),
never on the event loop. Models are loaded once by `load()` (at start-up); no
request creates a session, and nothing here caches responses.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from hygiene.config import CleanConfig
from photos.config import OutputConfig
from photos.keys import bytes_sha256, one_line

from .settings import ApiSettings

log = logging.getLogger("shelfready.api")

ITEM_DIR = "items"  # catalog photos added through the API, named by content hash
# Peak working memory of hygiene.clean per input pixel, decoded image included (28-36 B/px
# measured on 20 MP photos; bench/api_memory.py checks the resulting bound end to end).
CLEAN_BYTES_PER_PIXEL = 32


class NoCatalog(Exception):
    """The server was started without a catalog."""


class TextSearchUnsupported(ValueError):
    """Text queries need a CLIP catalog."""


@dataclass
class Hit:
    id: int
    sku: str
    label: str
    score: float


def finite(obj):
    """JSON-safe copy: numpy scalars -> Python, NaN/inf -> None, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class Engine:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.ready = False
        self.error: str | None = None
        self.catalog = None
        self.embedder = None

    # ---- start-up -------------------------------------------------------
    def load(self) -> None:
        """Load the remover, the catalog and its embedder once; record any failure."""
        started = time.perf_counter()
        try:
            from removers import segment

            removers = self.settings.clean_config()  # "cascade" resolved to its two removers
            for name in (removers.model, *removers.fallback_models):
                segment.get_session(name, self.settings.runtime)
            if self.settings.catalog:
                self._open_catalog(Path(self.settings.catalog))
            if self.settings.warmup:
                self._warm_up()
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, never raised into the loop
            self.error = one_line(exc)
            log.error("start-up failed: %s", self.error)
            return
        self.ready = True
        log.info("models loaded in %.1f s (remover %s, embedder %s, catalog %s)",
                 time.perf_counter() - started, self.settings.model,
                 getattr(self.embedder, "name", None), self.settings.catalog)

    def _open_catalog(self, directory: Path) -> None:
        """Open the catalog in `directory`, or start an empty one there (default embedder)."""
        from search import DEFAULT_EMBEDDER, Catalog, create_embedder

        if directory.exists() and not directory.is_dir():
            raise ValueError(f"catalog path is not a folder: {directory}")
        try:
            self.catalog = Catalog.open(directory)
        except FileNotFoundError:
            self.embedder = create_embedder(self.settings.embedder or DEFAULT_EMBEDDER, runtime=self.settings.runtime)
            try:
                self.catalog = Catalog.create(directory, self.embedder.name, self.embedder.dim)
                log.info("started an empty catalog in %s (%s)", directory, self.embedder.name)
            except FileExistsError:  # another process created it meanwhile
                self.catalog = Catalog.open(directory)
        if self.embedder is None or self.embedder.name != self.catalog.embedder_name:
            self.embedder = create_embedder(self.catalog.embedder_name, runtime=self.settings.runtime)
        self.catalog.check_embedder(self.embedder.name, self.embedder.dim)

    def _warm_up(self) -> None:
        """One tiny inference per model so the first request does not pay for it."""
        from hygiene import clean

        photo = Image.new("RGB", (96, 96), (230, 230, 230))
        photo.paste((40, 90, 160), (24, 24, 72, 72))
        clean(photo, self.settings.clean_config(size=128))
        if self.embedder is not None:
            self.embedder.embed([photo])

    # ---- per-request work (runs on a pool thread) -------------------------
    def _load(self, data: bytes) -> Image.Image:
        """Decode within this request's share of the memory budget (settings.memory_budget_mb).

        A photo whose cleaning would need more is decoded at the largest size that fits
        (a JPEG directly at 1/2..1/8 scale); one whose mere decoding would not fit is a 422.
        """
        from photos.io import load_image

        budget = self.settings.request_memory_bytes
        return load_image(data, self.settings.load_limits, fit_pixels=budget // CLEAN_BYTES_PER_PIXEL,
                          max_decode_bytes=budget)

    def clean(self, data: bytes, config: CleanConfig, output: OutputConfig) -> tuple[bytes, dict]:
        from hygiene import clean
        from photos.io import encode_image

        result = clean(self._load(data), config)
        encoded = encode_image(result.image, output)
        return encoded, finite(result.summary())

    def check(self, data: bytes, config: CleanConfig) -> dict:
        from hygiene import check

        return finite(check(self._load(data), config))

    def _vector(self, data: bytes, config: CleanConfig | None):
        """(the image to keep, its vector). ``config``: the request asked for the photo cleaned.

        A raw catalog gets the embedding of the image kept (cleaned if asked, as before). A
        catalog built with ``--embed clean|fused`` gets its vectors made the way its header
        says, from the photo as sent, whatever the request asked, so every vector in it is
        of one kind (search.embed_modes).
        """
        from search.embed_modes import embed_images, settings_of

        photo = self._load(data)
        image = photo
        if config is not None:
            from hygiene import clean

            image = clean(photo, config).image
        mode, clean_config, view = settings_of(self.catalog.embed, runtime=self.settings.runtime)
        if mode == "raw":
            return image, self.embedder.embed([image.convert("RGB")])
        return image, embed_images([photo.convert("RGB")], self.embedder, mode, clean_config, view)

    def search_image(self, data: bytes, k: int, config: CleanConfig | None) -> list[Hit]:
        catalog = self._need_catalog()
        _, vectors = self._vector(data, config)
        return self._hits(catalog.search(vectors, k)[0])  # the catalog is thread-safe

    def search_text(self, text: str, k: int) -> list[Hit]:
        catalog = self._need_catalog()
        try:
            vectors = self.embedder.embed_text([text])
        except ValueError as exc:
            raise TextSearchUnsupported(
                f"text search needs a CLIP catalog; this catalog uses {self.embedder.name}") from exc
        return self._hits(catalog.search(vectors, k)[0])

    def add_item(self, data: bytes, sku: str, label: str, config: CleanConfig | None) -> dict:
        """Add a photo; a photo whose bytes are already in the catalog (added by the API or the
        CLI) is not added again: its existing item is returned with ``added`` False."""
        from photos.io import save_image_atomic
        from search.items import check_text

        catalog = self._need_catalog()
        sku, label = check_text("sku", sku), check_text("label", label)
        digest = bytes_sha256(data)  # of the bytes sent, as the CLI hashes files
        known = catalog.find_hash(digest)
        if known:
            return self._item(catalog, known[0], added=False)
        image, vectors = self._vector(data, config)
        # The file name is ours (content hash), never anything the client sent; the stored
        # path is relative to the catalog folder, wherever the server was started.
        fmt = OutputConfig(format="png" if image.mode == "RGBA" else "jpg")
        rel = f"{ITEM_DIR}/{digest[:24]}.{fmt.format}"
        (catalog.directory / ITEM_DIR).mkdir(parents=True, exist_ok=True)
        path = save_image_atomic(image, catalog.resolve_path(rel), fmt)
        done = catalog.insert(vectors, [{"sku": sku, "label": label, "path": rel, "content_hash": digest}])
        if not done.new[0]:  # another request or process added the same photo meanwhile
            if catalog.get(done.ids[0]).path != rel:
                Path(path).unlink(missing_ok=True)
            return self._item(catalog, done.ids[0], added=False)
        return {"id": int(done.ids[0]), "sku": sku, "label": label, "content_hash": digest,
                "size": len(catalog), "added": True}

    @staticmethod
    def _item(catalog, item_id: int, added: bool) -> dict:
        item = catalog.get(item_id)
        return {"id": int(item.id), "sku": item.sku or "", "label": item.label or "",
                "content_hash": item.content_hash or "", "size": len(catalog), "added": added}

    def remove_item(self, item_id: int) -> dict | None:
        catalog = self._need_catalog()
        if not catalog.remove([item_id]):
            return None
        return {"id": item_id, "deleted": True, "size": len(catalog)}

    def catalog_size(self) -> int | None:
        if self.catalog is None:
            return None
        return len(self.catalog)

    def _need_catalog(self):
        if self.catalog is None:
            raise NoCatalog()
        return self.catalog

    @staticmethod
    def _hits(row) -> list[Hit]:
        return [Hit(id=int(h.id), sku=str(h.sku), label=str(h.label or ""), score=float(h.score))
                for h in row]
