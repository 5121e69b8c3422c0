"""Duplicate photos in a list of files: groups of copies, each link with its kind and score.

Kinds (search.config.DEDUP_KINDS, strongest first):

* ``exact``: the same bytes (sha256), or the same decoded pixels; score 1.0;
* ``near-exact``: imagehash's pHash and dHash both within DedupConfig's Hamming distances,
  the second photo as it is or mirrored; score 1 - (pHash distance / bits);
* ``same-product``: cosine similarity of the embedder's vectors >= DedupConfig.same_product_min;
  score the cosine.

A pair is reported once, as the strongest kind it meets among the kinds asked for. Groups are
the connected components of the pairs (union-find). Files are only read: nothing is written,
moved or deleted here. A file that cannot be read is one line in ``errors`` and the run goes on.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .config import DEDUP_KINDS, DEFAULT_DEDUP, DedupConfig

KEEP_RULES = ("first", "largest", "sharpest")


@dataclass
class PhotoInfo:
    """What dedup knows of one readable photo (no pixels kept)."""

    path: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    pixels_sha256: str
    sharpness: float


@dataclass(frozen=True)
class Pair:
    a: int  # indexes into DedupResult.photos, a < b
    b: int
    kind: str
    score: float


@dataclass
class Group:
    id: int
    members: list[int]  # indexes into DedupResult.photos, in path order
    pairs: list[Pair]


@dataclass
class DedupResult:
    photos: list[PhotoInfo]
    groups: list[Group]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    settings: dict = field(default_factory=dict)

    def best_link(self, group: Group, member: int) -> Pair:
        """The member's strongest pair in its group (strongest kind, then highest score)."""
        rank = {k: i for i, k in enumerate(DEDUP_KINDS)}
        links = [p for p in group.pairs if member in (p.a, p.b)]
        return min(links, key=lambda p: (rank[p.kind], -p.score))


# --------------------------------------------------------------------------- features of one photo


def pixels_digest(image: Image.Image) -> str:
    """sha256 of the decoded pixels with their mode and size: the same picture in another file."""
    h = hashlib.sha256(f"{image.mode} {image.size[0]}x{image.size[1]}\n".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def hash_bits(image: Image.Image, hash_size: int) -> np.ndarray:
    """pHash and dHash of the image and of its mirror image, packed: shape (4, bytes) uint8
    in the order pHash, pHash mirrored, dHash, dHash mirrored."""
    import imagehash

    mirror = ImageOps.mirror(image)
    hashes = [imagehash.phash(image, hash_size), imagehash.phash(mirror, hash_size),
              imagehash.dhash(image, hash_size), imagehash.dhash(mirror, hash_size)]
    return np.stack([np.packbits(h.hash.ravel()) for h in hashes])


def photo_sharpness(image: Image.Image, side: int) -> float:
    """Variance of the Laplacian with the photo scaled (up or down) to ``side`` px on its longer side,
    so a downscaled or upscaled copy is compared with its original at the same size."""
    from hygiene.checks import sharpness

    f = side / max(image.size)
    if f != 1:
        size = (max(1, round(image.size[0] * f)), max(1, round(image.size[1] * f)))
        image = image.resize(size, Image.Resampling.BICUBIC if f > 1 else Image.Resampling.BOX)
    rgb = np.asarray(image)
    return sharpness(rgb, (0, 0, rgb.shape[1], rgb.shape[0]), side)


# --------------------------------------------------------------------------- pairs and groups


def hamming(block: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Hamming distances between packed hashes: (m, bytes) x (n, bytes) -> (m, n)."""
    return np.bitwise_count(block[:, None, :] ^ others[None, :, :]).sum(axis=-1, dtype=np.int32)


def near_exact_pairs(hashes: np.ndarray, cfg: DedupConfig) -> dict[tuple[int, int], float]:
    """{(a, b): score} of the pairs whose pHash and dHash are within the config's distances, b taken
    as it is or mirrored. ``hashes``: (n, 4, bytes) from ``hash_bits``."""
    n = len(hashes)
    bits = cfg.hash_size * cfg.hash_size
    out: dict[tuple[int, int], float] = {}
    for start in range(0, n, cfg.block):
        stop = min(n, start + cfg.block)
        best = np.full((stop - start, n), bits + 1, dtype=np.int32)
        for p_col, d_col in ((0, 2), (1, 3)):  # a as it is against b, a mirrored against b
            dp = hamming(hashes[start:stop, p_col], hashes[:, 0])
            dd = hamming(hashes[start:stop, d_col], hashes[:, 2])
            ok = (dp <= cfg.phash_max) & (dd <= cfg.dhash_max)
            best = np.where(ok, np.minimum(best, dp), best)
        rows, cols = np.nonzero(best <= bits)
        for r, c in zip(rows.tolist(), cols.tolist()):
            a = start + r
            if a < c:
                out[(a, c)] = 1.0 - best[r, c] / bits
    return out


def similar_pairs(vectors: np.ndarray, threshold: float, block: int) -> dict[tuple[int, int], float]:
    """{(a, b): cosine} of the pairs of L2-normalised vectors with cosine >= threshold."""
    out: dict[tuple[int, int], float] = {}
    n = len(vectors)
    for start in range(0, n, block):
        sims = vectors[start:start + block] @ vectors.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            a = start + r
            if a < c:
                out[(a, c)] = round(float(sims[r, c]), 4)
    return out


def exact_pairs(photos: Sequence[PhotoInfo]) -> dict[tuple[int, int], float]:
    """Each photo with the first photo of the same bytes or the same pixels (a star per copy set)."""
    out: dict[tuple[int, int], float] = {}
    for attr in ("sha256", "pixels_sha256"):
        first: dict[str, int] = {}
        for i, p in enumerate(photos):
            j = first.setdefault(getattr(p, attr), i)
            if j != i:
                out[(j, i)] = 1.0
    return out


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_pairs(n: int, pairs: Sequence[Pair]) -> list[Group]:
    """Connected components of the pairs, numbered from 1 in the order of their first photo."""
    uf = UnionFind(n)
    for p in pairs:
        uf.union(p.a, p.b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(uf.find(i), []).append(i)
    by_root: dict[int, list[Pair]] = {}
    for p in pairs:
        by_root.setdefault(uf.find(p.a), []).append(p)
    roots = sorted(r for r, m in members.items() if len(m) > 1)
    return [Group(id=k, members=members[r], pairs=sorted(by_root[r], key=lambda p: (p.a, p.b)))
            for k, r in enumerate(roots, start=1)]


def strongest(found: dict[str, dict[tuple[int, int], float]]) -> list[Pair]:
    """One Pair per photo pair: its strongest kind (DEDUP_KINDS order) among those found."""
    seen: set[tuple[int, int]] = set()
    out = []
    for kind in DEDUP_KINDS:
        for (a, b), score in sorted(found.get(kind, {}).items()):
            if (a, b) not in seen:
                seen.add((a, b))
                out.append(Pair(a, b, kind, score))
    return out


# --------------------------------------------------------------------------- the whole run


def find_duplicates(
    paths: Sequence[str | Path],
    cfg: DedupConfig = DEFAULT_DEDUP,
    *,
    names: Sequence[str] | None = None,
    embedder=None,
    progress: Callable[[int], None] | None = None,
) -> DedupResult:
    """Groups of duplicates among ``paths`` for the kinds ``cfg.kinds``.

    ``names``: how each path is reported (default: the path as given). ``embedder``: for the
    same-product kind (default: ``search.create_embedder(cfg.embedder)``, built only when that
    kind is asked for). ``progress(k)`` is called after each photo.
    """
    from photos.io import ImageLoadError, load_image
    from photos.keys import file_sha256, one_line

    from .embedders import create_embedder, to_rgb

    names = list(names) if names is not None else [str(p) for p in paths]
    if len(names) != len(paths):
        raise ValueError("names must match paths one to one")
    want_vectors = "same-product" in cfg.kinds
    if want_vectors and embedder is None:
        embedder = create_embedder(cfg.embedder)
    photos: list[PhotoInfo] = []
    hashes: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    batch: list[Image.Image] = []
    errors: list[tuple[str, str]] = []
    batch_size = getattr(embedder, "batch_size", 16) or 16

    def flush() -> None:
        if batch:
            vectors.append(np.asarray(embedder.embed(batch), dtype=np.float32))
            batch.clear()

    for k, (path, name) in enumerate(zip(paths, names), start=1):
        try:
            image = to_rgb(load_image(path))
            info = PhotoInfo(path=name, width=image.size[0], height=image.size[1],
                             size_bytes=Path(path).stat().st_size, sha256=file_sha256(path),
                             pixels_sha256=pixels_digest(image), sharpness=0.0)
            info.sharpness = round(photo_sharpness(image, cfg.sharpness_side), 2)
            bits = hash_bits(image, cfg.hash_size)
        except (ImageLoadError, OSError, ValueError) as exc:
            errors.append((name, one_line(exc)))
        else:
            photos.append(info)
            hashes.append(bits)
            if want_vectors:
                batch.append(image)
                if len(batch) >= batch_size:
                    flush()
        if progress:
            progress(k)
    if want_vectors:
        flush()

    found: dict[str, dict[tuple[int, int], float]] = {}
    if photos:
        if "exact" in cfg.kinds:
            found["exact"] = exact_pairs(photos)
        if "near-exact" in cfg.kinds:
            found["near-exact"] = near_exact_pairs(np.stack(hashes), cfg)
        if want_vectors:
            found["same-product"] = similar_pairs(np.concatenate(vectors), cfg.same_product_min, cfg.block)
    groups = group_pairs(len(photos), strongest(found))
    settings = asdict(cfg) | {"kinds": list(cfg.kinds), "hash_library": _imagehash_version()}
    if not want_vectors:
        settings.pop("embedder")
    return DedupResult(photos=photos, groups=groups, errors=errors, settings=settings)


def _imagehash_version() -> str:
    from importlib.metadata import version

    return f"imagehash {version('imagehash')}"


# --------------------------------------------------------------------------- what a seller would remove


def keeper(result: DedupResult, group: Group, rule: str) -> int:
    """The photo of the group a seller keeps: ``first`` in path order, the ``largest`` (pixels, then
    bytes) or the ``sharpest`` (variance of the Laplacian at a common size, then pixels); ties go to
    the first in path order."""
    if rule not in KEEP_RULES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)}, got {rule!r}")
    order = sorted(group.members, key=lambda i: result.photos[i].path)
    if rule == "first":
        return order[0]

    def key(i: int):
        p = result.photos[i]
        size = (p.width * p.height, p.size_bytes)
        return size if rule == "largest" else (p.sharpness, *size)

    return max(order, key=key)  # max returns the first of equal keys


def to_remove(result: DedupResult, rule: str) -> list[str]:
    """Paths a seller would remove: every member of every group but its keeper, in path order."""
    out = []
    for g in result.groups:
        keep = keeper(result, g, rule)
        out += [result.photos[i].path for i in g.members if i != keep]
    return sorted(out)
