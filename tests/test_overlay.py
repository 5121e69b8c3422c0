"""The overlay check on real photos: "FREE SHIPPING" drawn on the white of a cleaned photo fails,
the print on a cap or a long-sleeve shirt is product text and passes; the detector's weights
missing give one line naming the fetch command."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

from hygiene import CleanConfig, check, clean
from hygiene.config import CheckConfig, RuleConfig
from hygiene.overlay import overlay_regions
from removers import text_det
from removers.errors import ModelError

WITH_TEXT = CleanConfig(checks=CheckConfig(rules=RuleConfig(text_overlay=True)))
PRINTED = ("hat-2.jpg", "longsleeve.jpg")  # a brand on a cap, a print on a shirt
PLAIN = ("hat.jpg", "shirt.jpg", "skirt.jpg")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def _font(size: int):
    return ImageFont.truetype(str(FONT), size) if FONT.is_file() else ImageFont.load_default(size)


@pytest.fixture(scope="module")
def cleaned(sample_paths, ppocr_det_path):
    by_name = {p.name: p for p in sample_paths}
    return {name: clean(Image.open(by_name[name]).convert("RGB"), WITH_TEXT) for name in PRINTED + PLAIN}


def _free_shipping(image: Image.Image, corner: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
    out = image.convert("RGB").copy()
    side = out.size[0]
    draw = ImageDraw.Draw(out)
    font = _font(max(12, side // 20))
    x0, y0, x1, y1 = draw.textbbox((0, 0), "FREE SHIPPING", font=font)
    pad = side // 50
    at = (pad, pad) if corner == "top" else (side - (x1 - x0) - pad, side - (y1 - y0) - pad)
    draw.text((at[0] - x0, at[1] - y0), "FREE SHIPPING", fill=(220, 20, 20), font=font)
    return out, (at[0], at[1], at[0] + x1 - x0, at[1] + y1 - y0)


@pytest.mark.parametrize("name", PRINTED + PLAIN)
@pytest.mark.parametrize("corner", ["top", "bottom"])
def test_text_drawn_on_the_white_fails(cleaned, name, corner):
    result = cleaned[name]
    assert result.status == "cleaned"
    drawn, (tx0, ty0, tx1, ty1) = _free_shipping(result.image, corner)
    overlay = check(drawn, WITH_TEXT)["checks"]["overlay"]
    assert not overlay["passed"], overlay
    for region in overlay["overlay"]:  # every overlay found lies on the drawn text
        x0, y0, x1, y1 = region["box"]
        assert x0 >= tx0 - 20 and x1 <= tx1 + 20 and y0 >= ty0 - 20 and y1 <= ty1 + 20, (region, (tx0, ty0, tx1, ty1))
    assert "overlay survived cleanup" in overlay["finding"]


@pytest.mark.parametrize("name", PRINTED)
def test_print_on_the_product_passes_and_is_listed(cleaned, name):
    result = cleaned[name]
    overlay = result.report["checks"]["overlay"]  # clean's report: judged against the mask
    assert overlay["passed"] and overlay["product_text"], overlay
    again = check(result.image, WITH_TEXT)["checks"]["overlay"]  # `check` of the written file: no mask
    assert again["passed"] and again["product_text"], again


@pytest.mark.parametrize("name", PLAIN)
def test_plain_cleaned_photo_has_no_overlay(cleaned, name):
    assert cleaned[name].report["checks"]["overlay"]["overlay"] == []
    assert check(cleaned[name].image, WITH_TEXT)["checks"]["overlay"]["passed"]


def test_text_on_the_product_in_the_mask_is_product_text(cleaned):
    """The same drawn words count as product text when the mask says they are on the product."""
    result = cleaned["shirt.jpg"]
    drawn, (x0, y0, x1, y1) = _free_shipping(result.image, "top")
    mask = np.zeros(drawn.size[::-1], np.uint8)
    mask[max(0, y0 - 30):y1 + 30, max(0, x0 - 30):x1 + 30] = 255
    found = overlay_regions(np.asarray(drawn), WITH_TEXT.checks.rules, mask)
    assert found["overlay"] == [] and found["product_text"]


def test_missing_weights_one_line_naming_the_fetch(tmp_path, monkeypatch, sample_paths):
    monkeypatch.setenv("SHELFREADY_MODEL_HOME", str(tmp_path))
    with pytest.raises(ModelError) as err:
        text_det.session(dataclasses.replace(WITH_TEXT.runtime, threads=1))
    assert "\n" not in str(err.value) and "shelfready models fetch ppocr-det" in str(err.value)
    from cli.main import cli

    res = CliRunner().invoke(cli, ["check", str(sample_paths[0]), "--text-overlay"])
    assert res.exit_code == 1 and "shelfready models fetch ppocr-det" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_cli_check_names_the_overlay(cleaned, tmp_path):
    drawn, _ = _free_shipping(cleaned["hat.jpg"].image, "top")
    path = tmp_path / "hat-free-shipping.png"
    drawn.save(path)
    from cli.main import cli

    res = CliRunner().invoke(cli, ["check", str(path), "--text-overlay"])
    assert res.exit_code == 1
    line = next(l for l in res.output.splitlines() if "overlay" in l)
    assert line.lstrip().startswith("FAIL") and "overlay survived cleanup" in line
