"""Every default of the scoring stage lives here and nowhere else.

The CLI and the API read these frozen dataclasses; library code takes them as
arguments (or falls back to the module-level defaults below).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from removers.config import RuntimeConfig

# Mirror-averaged EfficientNet-Lite0 (search/embedders.py, "+flip"). Against the plain embedding on
# the same photos (MRR, paired bootstrap 95 % CI; README "Mirror-averaged embedding"): clothing
# clean/clean +0.016 [+0.002, +0.031], raw/raw +0.004; grocery train raw/raw +0.015 [+0.009, +0.020],
# clean/clean +0.004; grocery val +0.004..+0.012 (CIs include 0); never lower. Costs 0.63x the
# embedder's throughput (bench/embed_speed.py --models): 3-4 ms more a photo on 2 Zen 5 cores.
DEFAULT_EMBEDDER = "cnn:efficientnet_lite0+flip"


# timm's resolved eval config of each CNN's TF-style weights: (input side, crop_pct); bicubic,
# mean = std = 0.5 for both (timm.data.resolve_data_config of tf_efficientnet_lite0 / _lite2)
CNN_INPUT: dict[str, tuple[int, float]] = {"efficientnet_lite0": (224, 0.875), "efficientnet_lite2": (260, 0.89)}


@dataclass(frozen=True)
class EmbedConfig:
    """How images become vectors."""

    embedder: str = DEFAULT_EMBEDDER
    # Images per forward pass. bench/embed_speed.py, EfficientNet-Lite0, 2 idle CPU cores:
    # batch 1: 18 img/s, 8: 21, 16: 21.5, 32: 19-21. Bigger batches only pay off on a GPU.
    batch_size: int = 16
    # CNN preprocessing (open_clip models bring their own transform).
    # "crop":   timm's eval transform for these weights (shorter side to image_size / crop_pct,
    #           bicubic, centre crop image_size). Default: measured best overall, see embedders.py.
    # "squash": resize the whole image to image_size x image_size, nothing cut off.
    resize_mode: str = "crop"
    image_size: int | None = None  # None: the architecture's (CNN_INPUT)
    crop_pct: float | None = None  # None: the architecture's (CNN_INPUT); only used by "crop"
    # engine and precision of the CNN (auto: OpenVINO when installed, bf16 where the CPU has
    # it natively; see removers/runtime.py); open_clip models always run on torch
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.resize_mode not in ("squash", "crop"):
            raise ValueError(f"resize_mode must be 'squash' or 'crop', got {self.resize_mode!r}")


@dataclass(frozen=True)
class IndexConfig:
    """FAISS index choice and parameters.

    ``index_type="auto"`` picks by catalog size (see ``auto_index_type``): exact
    ``flat`` up to ``flat_max`` vectors, graph ``hnsw`` up to ``hnsw_max``, compressed
    ``ivfpq`` beyond. A catalog grows through these types automatically: flat and
    hnsw store exact vectors, so the next index is built from them without loss.

    Measured with bench/catalog_speed.py (dim 1280, synthetic two-level clustered
    vectors, one faiss thread, 2-core machine; single-query p50 through Catalog.search):
    flat 27 ms at 50k, 46 ms at 100k, 477 ms at 1M (~48 ms per 100k vectors); hnsw
    0.9 ms at 50k-100k (recall@10 1.000) and 1.7 ms at 1M. Hence flat up to 50k
    (<= ~25 ms a query, instant adds). hnsw costs 5.4 KB a vector in RAM and its
    build is slow (1M: 835 s on 2 threads), and growing past ``hnsw_max`` rebuilds
    from a full copy of the vectors, so 1M (5.4 GB + a 5.1 GB copy during the switch)
    is the ceiling for a 24 GB machine; ivfpq then takes 80 B a vector (1M: 102 B a
    vector with centroids, p50 3.6 ms, recall@10 0.81 synthetic, 0.78 on 3,858 real
    EfficientNet-Lite0 embeddings of the shared grocery + clothing photos).
    """

    flat_max: int = 50_000
    hnsw_max: int = 1_000_000
    # HNSW (inner product)
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    # 1M vectors: efSearch 32 -> recall@10 0.865 (0.8 ms), 64 -> 0.910 (1.5 ms),
    # 128 -> 0.953 (1.7 ms), 256 -> 0.980 (2.1 ms).
    hnsw_ef_search: int = 128
    hnsw_compact_ratio: float = 0.2  # rebuild the graph when removed items exceed this share of it
    # IVF-PQ: nlist = round(ivf_nlist_factor * sqrt(n)) for n vectors at training time, at most
    # ivf_nlist_max and n_train / 39 (faiss' k-means wants >= 39 points a centroid).
    ivf_nlist_factor: float = 4.0
    ivf_nlist_max: int = 16_384
    ivf_nprobe: int = 32  # 1M synthetic: recall is PQ-bound (0.81 for nprobe 8..128); 3.6 ms p50
    pq_m: int = 64  # sub-quantizers; must divide dim (1280 = 64 x 20; 512 = 64 x 8)
    pq_nbits: int = 8
    ivfpq_min_train: int = 20_000  # below this an "ivfpq" catalog stays flat (with a note)
    train_max: int = 200_000  # training sample size cap (seeded random sample)
    # Binary: ITQ (PCA + learned rotation) then sign bits in an IndexBinaryFlat (exact Hamming scan:
    # 32 bytes a vector at 256 bits, so even 10M codes are a 320 MB scan). 1M: 42 B a vector with ids,
    # p50 4.3 ms, recall@10 0.78 synthetic / 0.65 on the real embeddings: a memory-bound fallback.
    binary_bits: int = 256
    binary_min_train: int = 2_000  # below this a "binary" catalog stays flat (with a note)
    seed: int = 1234

    def __post_init__(self) -> None:
        if not 0 < self.flat_max <= self.hnsw_max:
            raise ValueError("need 0 < flat_max <= hnsw_max")
        if self.binary_bits % 8:
            raise ValueError(f"binary_bits must be a multiple of 8, got {self.binary_bits}")


@dataclass(frozen=True)
class StoreConfig:
    """How processes share a catalog folder (see search/locks.py)."""

    # Seconds a writer waits while another process writes before giving up with a one-line
    # error. A writer holds the lock for one add/remove + save: well under a second for small
    # catalogs, but rewriting a 1M-vector HNSW catalog takes minutes (hence not lower).
    lock_timeout: float = 120.0
    lock_poll: float = 0.05  # seconds between tries while waiting

    def __post_init__(self) -> None:
        if not self.lock_timeout >= 0:
            raise ValueError(f"lock_timeout must be >= 0 seconds, got {self.lock_timeout!r}")
        if not self.lock_poll > 0:
            raise ValueError(f"lock_poll must be > 0 seconds, got {self.lock_poll!r}")


# --------------------------------------------------------------------------- evaluation

VIEW_BACKGROUNDS = ("white", "grey", "blur")


@dataclass(frozen=True)
class ViewConfig:
    """What the embedder sees of a cleaned photo (search/views.py): a view for search only.

    The marketplace output stays pure white at the preset's fill; a view is composed
    from the original photo, the remover's cached mask and the cleaning's geometry, so
    it costs no model run. A photo the gate did not trust (needs_review: the safe crop)
    is the same in every view.
    """

    background: str = "white"  # white | grey | blur (the photo's own background, blurred)
    fill: float | None = None  # product's longer side / canvas side; None = the clean preset's
    grey: int = 230  # level of the "grey" background (R = G = B)
    blur_sigma: float = 0.05  # "blur": Gaussian sigma as a share of the canvas side

    def __post_init__(self) -> None:
        if self.background not in VIEW_BACKGROUNDS:
            raise ValueError(f"view background must be one of {', '.join(VIEW_BACKGROUNDS)}, "
                             f"got {self.background!r}")
        if self.fill is not None and not 0.1 <= self.fill <= 1.0:
            raise ValueError(f"view fill must be between 0.1 and 1.0, got {self.fill}")
        if not 0 <= self.grey <= 255:
            raise ValueError(f"grey must be 0..255, got {self.grey}")
        if not 0 < self.blur_sigma <= 1:
            raise ValueError(f"blur_sigma must be in (0, 1], got {self.blur_sigma}")


@dataclass(frozen=True)
class ReasonsConfig:
    """Why cleanup gains or loses (search/reasons.py): what the embedder is shown of each photo.

    Every condition keeps the photo's own framing (nothing moved or resized) and uses the
    cleanup's own mask, so only what is taken away differs from the raw photo.
    """

    enabled: bool = True  # every evaluation measures its reasons (needs both sides cleaned)
    grey: int = 128  # neutral mid grey: the product's surroundings, or the product's box, become this
    metric: str = "R@1"  # the metric the sentences quote (MRR is in the tables too)

    def __post_init__(self) -> None:
        if not 0 <= self.grey <= 255:
            raise ValueError(f"grey must be 0..255, got {self.grey}")
        if self.metric not in ("R@1", "MRR"):
            raise ValueError(f"metric must be R@1 or MRR, got {self.metric!r}")


# Second opinions (`evaluate --embedders a,b`): a gain or a loss is "robust" only when every
# embedder's MRR difference has the same sign and each CI excludes 0.
SECOND_EMBEDDER = "cnn:efficientnet_lite2+flip"


# --------------------------------------------------------------------------- duplicates

DEDUP_KINDS = ("exact", "near-exact", "same-product")  # strongest first: a pair is reported as its strongest


@dataclass(frozen=True)
class DedupConfig:
    """When two photos are duplicates (search/dedup.py, `shelfready dedup`).

    exact: the same bytes (sha256), or the same decoded pixels (another container, metadata).
    near-exact: imagehash's 64-bit pHash AND dHash within these Hamming distances, the second
    photo taken as it is or mirrored (a flipped copy matches). same-product: cosine similarity
    of the embedder's vectors of the whole photos at least ``same_product_min``.

    The thresholds come from bench/dedup.py's sweeps (docs/dedup.md: figures and commands) on its
    seeded sets of clothing_small originals, each with resized, re-encoded, cropped, mirrored, rotated
    and brightened copies, the other photos of the same class being the hard negatives (seed 0:
    40 originals, 280 photos; seed 1: 80 originals, 560 photos).
    """

    kinds: tuple[str, ...] = DEDUP_KINDS
    hash_size: int = 8  # imagehash's default: 8 x 8 = 64-bit hashes
    # pHash <= 12 and dHash <= 14: no false pair on either set (pair recall 0.72 / 0.78); one step
    # looser, (14, 16) or (16, 12), gives the first false pairs (3 on seed 0), so this keeps a step's margin.
    phash_max: int = 12  # pHash Hamming distance (of 64 bits) a near-exact copy may have
    dhash_max: int = 14  # dHash Hamming distance, and the pair must pass both
    # Cosine of the mirror-averaged EfficientNet-Lite0 vectors of two different products: at most
    # 0.803 (seed 0) and 0.868 (seed 1, all same-class pairs); at 0.90 no false pair on either set,
    # while crop copies (5-15 %) are found at 0.85 / 0.91 by the cosine alone.
    same_product_min: float = 0.90
    embedder: str = DEFAULT_EMBEDDER
    # --keep sharpest: variance of the Laplacian with every photo scaled to this longer side (a
    # downscaled copy would look sharper at its own size)
    sharpness_side: int = 512
    # photos compared with all the others at a time: the pairwise step holds block x n x 8 bytes of
    # hash XORs (256 x 100,000 photos: 205 MB) and block x n float32 cosines
    block: int = 256

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in DEDUP_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be among {', '.join(DEDUP_KINDS)}, got {', '.join(self.kinds) or 'none'}")
        bits = self.hash_size * self.hash_size
        if self.hash_size < 2 or not 0 <= self.phash_max <= bits or not 0 <= self.dhash_max <= bits:
            raise ValueError(f"hash distances must be within 0..{bits} bits")
        if not -1.0 <= self.same_product_min <= 1.0:
            raise ValueError(f"same_product_min must be a cosine in [-1, 1], got {self.same_product_min}")
        if self.block < 1 or self.sharpness_side < 16:
            raise ValueError("block must be >= 1 and sharpness_side >= 16")


INDEX_TYPES = ("auto", "flat", "hnsw", "ivfpq", "binary")


def auto_index_type(count: int, cfg: IndexConfig | None = None) -> str:
    """The index type "auto" uses for a catalog of ``count`` vectors."""
    cfg = cfg or IndexConfig()
    if count <= cfg.flat_max:
        return "flat"
    if count <= cfg.hnsw_max:
        return "hnsw"
    return "ivfpq"


DEFAULT_EMBED = EmbedConfig()
DEFAULT_INDEX = IndexConfig()
DEFAULT_STORE = StoreConfig()
DEFAULT_VIEW = ViewConfig()
DEFAULT_REASONS = ReasonsConfig()
DEFAULT_DEDUP = DedupConfig()
