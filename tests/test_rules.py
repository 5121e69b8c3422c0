"""The marketplace rules of hygiene/rules.py on real photos: a border drawn onto a cleaned photo
is named by its sides, a colour block fails, a photo cropped through its product is cut off at
that side, and the plain cleaned photos pass."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hygiene import CleanConfig, check, clean
from hygiene.config import RuleConfig
from hygiene.frame import product_box
from hygiene.rules import border_sides, colour_blocks, cut_off_sides

PHOTOS = ("hat.jpg", "shirt.jpg", "shoes.jpg", "dress.jpg")
RULES = ("border", "colour_block", "cut_off")


@pytest.fixture(scope="module")
def cleaned(sample_paths) -> dict[str, tuple[Image.Image, object]]:
    by_name = {p.name: p for p in sample_paths}
    out = {}
    for name in PHOTOS:
        photo = Image.open(by_name[name]).convert("RGB")
        out[name] = (photo, clean(photo, CleanConfig()))
    return out


def _rgb(result) -> np.ndarray:
    return np.asarray(result.image.convert("RGB")).copy()


@pytest.mark.parametrize("name", PHOTOS)
def test_plain_cleaned_photo_passes_every_rule(cleaned, name):
    _, result = cleaned[name]
    assert result.status == "cleaned"
    for rule in RULES:  # in clean's own report (the summary rows) ...
        assert result.report["checks"][rule]["passed"], (rule, result.report["checks"][rule])
    again = check(result.image)  # ... and in `check` of the written output
    for rule in RULES:
        assert again["checks"][rule]["passed"], (rule, again["checks"][rule])


@pytest.mark.parametrize("name", PHOTOS)
def test_drawn_frame_fails_and_names_its_sides(cleaned, name):
    rgb = _rgb(cleaned[name][1])
    rgb[:14] = rgb[-14:] = (35, 60, 140)  # a blue frame, 14 px
    rgb[:, :14] = rgb[:, -14:] = (35, 60, 140)
    report = check(Image.fromarray(rgb))
    assert not report["checks"]["border"]["passed"]
    assert report["checks"]["border"]["sides"] == ["top", "bottom", "left", "right"]
    assert "border" in report["failed"] and not report["ready"]


@pytest.mark.parametrize("name", PHOTOS)
def test_thin_frame_line_inside_a_white_margin_fails(cleaned, name):
    rgb = _rgb(cleaned[name][1])
    h, w = rgb.shape[:2]
    m = round(0.02 * h)  # a 3 px grey line 2 % in from the edge, white outside it
    rgb[m:m + 3, m:w - m] = rgb[h - m - 3:h - m, m:w - m] = (120, 120, 120)
    rgb[m:h - m, m:m + 3] = rgb[m:h - m, w - m - 3:w - m] = (120, 120, 120)
    assert border_sides(rgb, RuleConfig()) == ["top", "bottom", "left", "right"]


def test_banner_strip_on_one_side_is_named(cleaned):
    rgb = _rgb(cleaned["shirt.jpg"][1])
    rgb[-round(0.07 * rgb.shape[0]):] = (200, 30, 30)  # a red banner along the bottom, 7 % high
    report = check(Image.fromarray(rgb))
    assert report["checks"]["border"]["sides"] == ["bottom"]
    assert report["checks"]["border"]["finding"] == "border at the bottom edge"


@pytest.mark.parametrize("name", PHOTOS)
def test_corner_colour_block_fails(cleaned, name):
    rgb = _rgb(cleaned[name][1])
    h, w = rgb.shape[:2]
    rgb[: h // 7, w - w // 5:] = (240, 190, 20)  # a yellow badge in the top right corner
    assert colour_blocks(rgb, RuleConfig()) == 1
    assert colour_blocks(_rgb(cleaned[name][1]), RuleConfig()) == 0
    assert not check(Image.fromarray(rgb))["checks"]["colour_block"]["passed"]


@pytest.mark.parametrize("name,side", [("hat.jpg", "right"), ("shirt.jpg", "left"), ("shoes.jpg", "bottom")])
def test_photo_cropped_through_the_product_is_cut_off_at_that_side(cleaned, name, side):
    photo, result = cleaned[name]
    x0, y0, x1, y1 = product_box(result.mask, 128)
    w, h = photo.size
    crop = {"right": (0, 0, (x0 + x1) // 2, h), "left": ((x0 + x1) // 2, 0, w, h),
            "bottom": (0, 0, w, (y0 + 2 * y1) // 3)}[side]
    cut = clean(photo.crop(crop), CleanConfig())
    finding = cut.report["checks"]["cut_off"]
    assert not finding["passed"] and finding["sides"] == [side], finding
    assert finding["finding"] == f"product cut off at the {side} edge"
    # the finding comes from the photo as given, whatever the cleanup made of it
    assert "cut_off" in cut.report["failed"] and not cut.report["ready"]


def test_uncropped_masks_touch_no_side(cleaned):
    for name in PHOTOS:
        assert cut_off_sides(cleaned[name][1].mask, RuleConfig()) == []


def test_check_without_mask_on_a_coloured_background_does_not_guess_a_cut_off(sample_paths):
    report = check(Image.open(sample_paths[0]).convert("RGB"))
    assert report["checks"]["cut_off"]["value"] is None and not report["checks"]["white_background"]["passed"]


def _with_inset(result, inset_photo: Image.Image) -> Image.Image:
    out = result.image.convert("RGB").copy()
    side = out.size[0]
    inset = inset_photo.copy()
    inset.thumbnail((side // 4, side // 4))
    out.paste(inset, (side - inset.size[0] - side // 40, side // 40))  # top right, on the white
    return out


@pytest.mark.parametrize("name", ["hat.jpg", "dress.jpg"])
def test_pasted_photo_is_an_inset(cleaned, name):
    other = cleaned["shoes.jpg"][0]  # a real photo (its own background) pasted into another
    report = check(_with_inset(cleaned[name][1], other))
    inset = report["checks"]["inset"]
    assert not inset["passed"] and len(inset["boxes"]) == 1, inset
    x0, y0, x1, y1 = inset["boxes"][0]
    side = report["width"]
    assert x1 > 0.9 * side and y0 < 0.1 * side and (x1 - x0) < 0.3 * side


@pytest.mark.parametrize("name", PHOTOS)
def test_plain_photos_have_no_inset(cleaned, name):
    photo, result = cleaned[name]
    assert result.report["checks"]["inset"]["boxes"] == []
    assert check(photo)["checks"]["inset"]["boxes"] == []


def test_clean_summary_names_the_failed_rules(cleaned, tmp_path):
    """`shelfready clean`'s summary rows carry the new checks like the others (failed_checks)."""
    import csv
    import json

    from click.testing import CliRunner

    from cli.main import cli

    photo, result = cleaned["hat.jpg"]
    x0, y0, x1, y1 = product_box(result.mask, 128)
    (tmp_path / "in").mkdir()
    photo.crop((0, 0, (x0 + x1) // 2, photo.size[1])).save(tmp_path / "in" / "hat-cut.png")
    photo.save(tmp_path / "in" / "hat.png")
    res = CliRunner().invoke(cli, ["clean", str(tmp_path / "in"), str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    rows = {r["rel"]: r for r in csv.DictReader((tmp_path / "out" / "summary.csv").open())}
    assert "cut_off" in rows["hat-cut.png"]["failed_checks"]
    assert "cut_off" not in rows["hat.png"]["failed_checks"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    by_rel = {r["rel"]: r for r in summary["photos"]}
    assert "cut_off" in str(by_rel["hat-cut.png"]["failed_checks"])
