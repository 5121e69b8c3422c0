"""hygiene.confidence: mask signals, the gate decision, and two dev photos whose
retrieval outcome the calibration explained (bench/calibrate_gate.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hygiene.confidence import GateConfig, assess, mask_signals

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def blank(h: int = 100, w: int = 200) -> np.ndarray:
    return np.zeros((h, w), np.uint8)


def test_signals_of_hand_made_masks():
    a = blank()
    a[20:60, 20:60] = 255  # 1600 px product
    a[20:60, 120:130] = 255  # 400 px second object
    a[70:80, 20:60] = 128  # undecided strip, counted as product too (>= 128)
    a[85:90, 20:60] = 60  # undecided, below the product threshold
    s = mask_signals(a)
    solid = 1600 + 400 + 400
    assert s["fg_share"] == pytest.approx(solid / 20000, abs=1e-4)
    assert s["undecided"] == pytest.approx((400 + 200) / (400 + 200 + solid), abs=1e-4)
    assert s["objects"] == 3  # the 400 px strip is a blob of its own
    assert s["main_share"] == pytest.approx(1600 / solid, abs=1e-4)
    assert s["border_touch"] == 0.0
    assert s["solidity"] == pytest.approx(solid / (60 * 110), abs=1e-4)


def test_full_frame_mask_touches_the_whole_border():
    s = mask_signals(np.full((50, 80), 255, np.uint8))
    assert s["border_touch"] == 1.0 and s["fg_share"] == 1.0 and s["objects"] == 1


def test_empty_mask_fails_with_a_reason():
    res = assess(np.zeros((100, 200, 3), np.uint8), blank(), None, GateConfig())
    assert not res.passed
    assert res.score < 0.5
    assert res.reasons == ["no product found in the mask"]


def test_refine_agreement_is_measured():
    a = blank()
    a[20:60, 20:60] = 255
    r = a.copy()
    r[20:60, 60:100] = 255  # refinement doubled the product
    assert mask_signals(a, GateConfig(), r)["refine_iou"] == pytest.approx(0.5)


def test_score_is_half_at_the_threshold_and_monotone():
    cfg = GateConfig()
    rgb = np.zeros((100, 200, 3), np.uint8)
    scores = []
    for undecided_rows in (0, 10, 30):
        a = blank()
        a[20:60, 40:160] = 255
        a[60:60 + undecided_rows, 40:160] = 100
        scores.append(assess(rgb, a, None, cfg).score)
    assert scores[0] >= scores[1] >= scores[2]
    assert scores[0] >= 0.5


def test_disabled_gate_passes_everything():
    res = assess(np.zeros((100, 200, 3), np.uint8), blank(), None, GateConfig(enabled=False))
    assert res.passed and res.reasons == []


def test_mismatched_shapes_raise_value_error():
    with pytest.raises(ValueError):
        assess(np.zeros((10, 10, 3), np.uint8), blank(), None, GateConfig())
    with pytest.raises(ValueError):
        mask_signals(np.zeros((10, 10), np.float32))
