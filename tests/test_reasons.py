"""search.reasons: chance, the plain sentences, the framed views, and two sets built from real photos.

The built sets compose real product cut-outs (demo_data photos, cut out by the project's own
remover) onto real textures (scikit-image's packaged brick, grass and gravel photos):

* "class backgrounds": every hat on brick, every pair of shoes on grass, every pair of trousers
  on gravel: the backgrounds alone carry the class, so the reasons must show a shortcut;
* "one background": every photo on the same gravel texture (different crops): the backgrounds
  carry nothing, so they must not.
"""
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hygiene.config import CleanConfig
from search import reasons
from search.config import ReasonsConfig
from search.datasets import LabelledImage
from search.views import framed_view

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo_data"
CLASSES = ("hat", "shoes", "pants")
CANVAS = 288


# ---- chance and sentences ---------------------------------------------------------------


def test_chance_matches_enumerating_every_ranking():
    c_labels = np.array(["a", "a", "b", "c", "c", "c"], dtype=object)
    q_labels = np.array(["a", "b", "c"], dtype=object)
    r1, rr = [], []
    for q in q_labels:
        hits, recips = [], []
        for perm in itertools.permutations(range(c_labels.size)):
            ranked = c_labels[list(perm)]
            hits.append(ranked[0] == q)
            recips.append(1.0 / (1 + int(np.argmax(ranked == q))))
        r1.append(np.mean(hits))
        rr.append(np.mean(recips))
    got = reasons.chance(q_labels, c_labels)
    assert got["R@1"] == pytest.approx(np.mean(r1)) and got["MRR"] == pytest.approx(np.mean(rr))


def _fake(shortcut: bool, context: float, framing: float) -> dict:
    ci = lambda m, half=0.02: {"mean": m, "low": m - half, "high": m + half}  # noqa: E731
    bg = ci(0.5 if shortcut else 0.1, 0.05)
    return {"metric": "R@1", "chance": {"R@1": 0.1, "MRR": 0.2},
            "conditions": {"raw": {"R@1": ci(0.7)}, "product-grey": {"R@1": ci(0.7 + context)},
                           "background": {"R@1": bg}},
            "shortcut": {"R@1": {**bg, "chance": 0.1, "times_chance": bg["mean"] / 0.1,
                                 "present": bg["low"] > 0.1}},
            "context": {"R@1": ci(context)}, "framing": {"R@1": ci(framing)}}


def test_explain_names_the_background_for_a_loss_only_when_measured():
    with_shortcut = reasons.explain(_fake(True, -0.2, 0.0), "loss")
    assert "partly by their backgrounds" in with_shortcut[0]
    assert any("5.0 times chance" in s and "above chance" in s for s in with_shortcut)
    assert any(s.startswith("Context reliance") and "falls" in s for s in with_shortcut)
    without = reasons.explain(_fake(False, 0.0, 0.0), "loss")
    assert "not explained" in without[0] and "backgrounds" in without[0]
    assert any("not above chance" in s for s in without)
    reframed = reasons.explain(_fake(False, 0.0, -0.1), "loss")
    assert "reframing" in reframed[0]
    assert "reframing" in reasons.explain(_fake(False, 0.0, 0.1), "gain")[0]
    removed = _fake(False, 0.0, 0.0)
    removed["removal"] = {"R@1": {"mean": 0.06, "low": 0.03, "high": 0.09}}
    assert "taking the background away" in reasons.explain(removed, "gain")[0]
    assert any(s.startswith("Background removal") and "raises R@1" in s for s in reasons.explain(removed, "gain"))
    apart = _fake(False, 0.0, 0.08)
    apart["removal"] = {"R@1": {"mean": -0.09, "low": -0.14, "high": -0.04}}
    assert "pull apart" in reasons.explain(apart, "no significant change")[0]


# ---- framed views -----------------------------------------------------------------------


def test_framed_views_keep_the_framing_and_take_away_one_part():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((60, 80), np.uint8)
    mask[20:40, 30:60] = 255
    cfg = CleanConfig()
    rgb = np.asarray(photo)
    views = {k: np.asarray(framed_view(photo, mask, cfg, k, 128, given_alpha=True))
             for k in ("product-grey", "product-white", "background")}
    assert all(v.shape == rgb.shape for v in views.values())
    assert (views["product-grey"][:20] == 128).all() and (views["product-white"][:20] == 255).all()
    np.testing.assert_array_equal(views["product-grey"][25:35, 35:55], rgb[25:35, 35:55])
    assert (views["background"][20:40, 30:60] == 128).all()
    np.testing.assert_array_equal(views["background"][:20], rgb[:20])
    with pytest.raises(ValueError, match="unknown framed view"):
        framed_view(photo, mask, cfg, "sky", 128)


# ---- built sets from real photos --------------------------------------------------------


def _texture(name: str, tint) -> np.ndarray:
    from skimage import data

    grey = getattr(data, name)().astype(np.float32) / 255.0  # 512 x 512 photos scikit-image ships
    return np.clip(grey[..., None] * np.asarray(tint, np.float32), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cutouts():
    """Real product cut-outs: 8 demo photos a class (4 listings, 4 shopper photos), cut out by
    the project's remover and cropped to the product."""
    from hygiene import clean
    from photos.io import load_image

    out = {}
    for label in CLASSES:
        paths = sorted((DEMO / "listings" / label).glob("*.jpg")) + sorted((DEMO / "queries" / label).glob("*.jpg"))
        out[label] = []
        for p in paths[:8]:
            image = load_image(p).convert("RGB")
            image.thumbnail((320, 320))
            mask = clean(image, CleanConfig()).mask
            ys, xs = np.nonzero(mask >= 128)
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            rgba = image.convert("RGBA")
            rgba.putalpha(Image.fromarray(mask, "L"))
            out[label].append(rgba.crop(box))
    return out


def _build(folder: Path, cutouts, background_of) -> tuple[list, list]:
    """Queries (4 a class) and catalog (4 a class): each cut-out on its background, seeded crops
    and placements. ``background_of(label)`` -> (texture, tint)."""
    rng = np.random.default_rng(7)
    textures = {}
    queries, catalog = [], []
    for label in CLASSES:
        for i, cut in enumerate(cutouts[label]):
            key = background_of(label)
            if key not in textures:
                textures[key] = _texture(*key)
            tex = textures[key]
            y, x = rng.integers(0, tex.shape[0] - CANVAS, size=2)
            canvas = Image.fromarray(tex[y:y + CANVAS, x:x + CANVAS].copy(), "RGB")
            side_px = int(CANVAS * 0.5)  # every product's box the same square: its shape tells no class
            cut = cut.resize((side_px, side_px), Image.LANCZOS)
            px = int(rng.integers(20, CANVAS - cut.width - 20))
            py = int(rng.integers(20, CANVAS - cut.height - 20))
            canvas.paste(cut, (px, py), cut)
            side = "queries" if i % 2 else "catalog"
            path = folder / side / label / f"{label}-{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            canvas.save(path, quality=92)
            (queries if side == "queries" else catalog).append(LabelledImage(path, label, path.stem))
    return queries, catalog


def _reasons_of(folder: Path, cutouts, background_of, cache: Path) -> dict:
    from search.evaluate import EvalConfig, evaluate

    queries, catalog = _build(folder, cutouts, background_of)
    ev = evaluate(queries, catalog, "cnn:efficientnet_lite0", scenario="normalised-index",
                  config=EvalConfig(cache_dir=cache, resamples=500, reasons=ReasonsConfig()), progress=False)
    assert ev.reasons and "error" not in ev.reasons, ev.reasons
    assert ev.reasons["n_queries"] == 12 and ev.reasons["n_catalog"] == 12
    return ev.reasons


TINTS = {"hat": ("brick", (255, 120, 90)), "shoes": ("grass", (90, 255, 110)), "pants": ("gravel", (110, 140, 255))}


@pytest.mark.slow
def test_backgrounds_that_carry_the_class_show_a_shortcut(cutouts, tmp_path, tmp_path_factory):
    r = _reasons_of(tmp_path, cutouts, TINTS.get, tmp_path_factory.getbasetemp() / "reasons-cache")
    s = r["shortcut"]["R@1"]
    assert r["chance"]["R@1"] == pytest.approx(1 / 3)
    assert s["present"] and s["low"] > r["chance"]["R@1"], s
    assert any("the CI lies above chance" in x for x in r["sentences"])
    assert set(r["by_class"]) == set(CLASSES)


@pytest.mark.slow
def test_one_shared_background_shows_no_shortcut(cutouts, tmp_path, tmp_path_factory):
    shared = ("gravel", (200, 200, 200))
    r = _reasons_of(tmp_path, cutouts, lambda label: shared, tmp_path_factory.getbasetemp() / "reasons-cache")
    s = r["shortcut"]["R@1"]
    assert not s["present"] and s["low"] <= r["chance"]["R@1"], s
    assert any("not above chance" in x for x in r["sentences"])
    # the products, not the backgrounds, carry the class here
    assert r["conditions"]["product-grey"]["R@1"]["mean"] > s["mean"]
