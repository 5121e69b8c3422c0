"""search.views: what the embedder sees of a cleaned photo (background, fill), from the cached mask."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hygiene.config import CleanConfig
from hygiene.pipeline import clean
from photos.io import load_image
from search.config import ViewConfig
from search.views import compose_view, is_output, load_view, parse_view, view_key, view_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
CFG = CleanConfig()


@pytest.fixture(scope="module")
def dress():
    """A real photo the gate trusts, its cleanup and the remover's mask (u2netp)."""
    image = load_image(SAMPLES / "dress.jpg")
    result = clean(image, CFG)
    assert result.status == "cleaned", result.reasons
    return image, result


def _views(dress, *specs):
    image, result = dress
    return [np.asarray(compose_view(image, result.mask, CFG, parse_view(s))) for s in specs]


def test_parse_and_name_views():
    assert parse_view("grey") == ViewConfig(background="grey")
    assert parse_view("blur@0.95") == ViewConfig(background="blur", fill=0.95)
    assert parse_view("@1.0", ViewConfig(background="grey")) == ViewConfig(background="grey", fill=1.0)
    assert view_name(parse_view("white@0.95")) == "white@0.95" and view_name(ViewConfig()) == "white"
    for bad in ("pink", "blur@x", "white@1.5", "grey@0"):
        with pytest.raises(ValueError):
            parse_view(bad)
    # the marketplace output itself keeps today's cache tag; every other view has its own
    assert is_output(ViewConfig(), CFG) and is_output(parse_view("white@0.85"), CFG)
    assert view_key(ViewConfig(), CFG) == "" and view_key(parse_view("white@0.85"), CFG) == ""
    keys = {view_key(parse_view(s), CFG) for s in ("grey", "blur", "white@0.95", "blur@0.95", "grey@1.0")}
    assert len(keys) == 5 and "" not in keys
    assert view_key(ViewConfig(background="grey", grey=200), CFG) != view_key(ViewConfig(background="grey"), CFG)


def test_white_view_is_the_cleaned_image(dress):
    """Composed from the photo + mask with the cleanup's own steps: the same pixels, no model run."""
    _, result = dress
    (white,) = _views(dress, "white")
    assert white.shape == np.asarray(result.image).shape
    assert np.array_equal(white, np.asarray(result.image))


def test_grey_view_background_and_product(dress):
    image, _ = dress
    white, grey = _views(dress, "white", "grey")
    # where the output is transparent the grey view is the grey level; where opaque, the white view's pixel
    alpha = np.asarray(clean(image, CleanConfig(transparent=True)).image)[..., 3]
    assert alpha.shape == grey.shape[:2]
    assert (alpha == 0).mean() > 0.2 and (alpha == 255).mean() > 0.2
    assert np.all(grey[alpha == 0] == 230)
    assert np.array_equal(grey[alpha == 255], white[alpha == 255])
    assert np.all(white[alpha == 0] == 255)


def test_blur_view_keeps_the_product_sharp_on_its_own_blurred_background(dress):
    image, _ = dress
    white, blur = _views(dress, "white", "blur")
    alpha = np.asarray(clean(image, CleanConfig(transparent=True)).image)[..., 3]
    assert np.array_equal(blur[alpha == 255], white[alpha == 255])  # product untouched
    bg = alpha == 0
    # the background is the photo's own (its mean colour), not white, grey or the product's colour
    rgb = np.asarray(image.convert("RGB")).astype(float)
    raw_mask = dress[1].mask
    photo_bg = rgb[raw_mask < 8].mean(0)
    product = rgb[raw_mask > 247].mean(0)
    view_bg = blur[bg].astype(float).mean(0)
    assert np.abs(view_bg - photo_bg).max() < 20, (view_bg, photo_bg)
    assert np.abs(view_bg - photo_bg).sum() < np.abs(view_bg - product).sum()
    # and strongly blurred: far less fine detail than the photo's background at the same scale
    grey_view = cv2.cvtColor(blur, cv2.COLOR_RGB2GRAY).astype(float)
    grey_photo = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY).astype(float)
    far_view = cv2.erode(bg.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    far_photo = cv2.erode((raw_mask < 8).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    detail_view = np.abs(cv2.Laplacian(grey_view, cv2.CV_64F))[far_view].mean()
    detail_photo = np.abs(cv2.Laplacian(grey_photo, cv2.CV_64F))[far_photo].mean()
    assert detail_view < 0.25 * detail_photo, (detail_view, detail_photo)


@pytest.mark.parametrize("fill", [0.95, 1.0])
def test_fill_view_product_fills_the_share(dress, fill):
    white, grey = _views(dress, f"white@{fill}", f"grey@{fill}")
    assert white.shape == grey.shape and white.shape[0] == white.shape[1]
    same = np.all(white == grey, axis=2)  # only the opaque product is the same on both backgrounds
    ys, xs = np.nonzero(same)
    longer = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    assert longer / white.shape[0] == pytest.approx(fill, abs=0.015)
    (base,) = _views(dress, "white")
    same0 = np.all(base == _views(dress, "grey")[0], axis=2)
    ys0, xs0 = np.nonzero(same0)
    assert longer / white.shape[0] > max(xs0.max() - xs0.min() + 1, ys0.max() - ys0.min() + 1) / base.shape[0]


def test_load_view_needs_review_is_the_same_in_every_view(tmp_path, dress):
    """A photo the gate did not trust is its safe crop in every view; a cleaned one without a mask is refused."""
    image, result = dress
    crop = tmp_path / "crop.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(crop)
    for spec in ("white", "grey", "blur@0.95"):
        got = load_view(SAMPLES / "dress.jpg", crop, None, "needs_review", "u2netp", CFG, parse_view(spec))
        assert np.all(np.asarray(got) == 90)
    mask = tmp_path / "dress.mask.png"
    Image.fromarray(result.mask, "L").save(mask)
    got = load_view(SAMPLES / "dress.jpg", crop, mask, "cleaned", "u2netp", CFG, parse_view("grey"))
    assert np.array_equal(np.asarray(got), _views(dress, "grey")[0])
    # the marketplace view is the cached file itself
    assert np.all(np.asarray(load_view(SAMPLES / "dress.jpg", crop, mask, "cleaned", "u2netp", CFG,
                                       ViewConfig())) == 90)
    with pytest.raises(ValueError, match="no cached mask"):
        load_view(SAMPLES / "dress.jpg", crop, tmp_path / "missing.png", "cleaned", "u2netp", CFG,
                  parse_view("grey"))
    with pytest.raises(ValueError, match="does not match"):
        compose_view(image, result.mask[:-4], CFG, parse_view("grey"))
