import numpy as np
import pytest

from hygiene import frame


@pytest.mark.parametrize("box,size,fill", [
    ((10, 20, 110, 320), 1600, 0.85),   # tall product
    ((0, 0, 400, 100), 1000, 0.85),     # wide product touching the photo edge
    ((5, 5, 55, 55), 800, 0.5),
    ((3, 7, 1503, 1007), 1500, 0.9),    # downscale
])
def test_plan_fills_and_centres(box, size, fill):
    layout = frame.plan(box, size, fill, max_upscale=100)
    assert layout.canvas == size
    assert not layout.upscale_limited
    assert abs(layout.fill - fill) <= 0.01
    px0, py0, px1, py1 = layout.placed
    assert 0 <= px0 and 0 <= py0 and px1 <= size and py1 <= size
    assert abs((px0 + px1) / 2 - size / 2) <= 1 and abs((py0 + py1) / 2 - size / 2) <= 1
    # aspect ratio of the product is kept
    bw, bh = box[2] - box[0], box[3] - box[1]
    assert abs((px1 - px0) / (py1 - py0) - bw / bh) < 0.02


def test_plan_limits_upscale_with_smaller_canvas():
    layout = frame.plan((0, 0, 100, 200), 1600, 0.85, max_upscale=2.0)
    assert layout.upscale_limited
    assert layout.scale == 2.0
    assert layout.canvas == round(200 * 2.0 / 0.85)
    assert abs(layout.fill - 0.85) <= 0.01


def test_product_box_and_empty():
    a = np.zeros((50, 60), np.uint8)
    assert frame.product_box(a, 128) is None
    a[10:20, 30:45] = 200
    a[5, 5] = 100  # below threshold: not product
    assert frame.product_box(a, 128) == (30, 10, 45, 20)


def test_place_pastes_region_on_background():
    layout = frame.plan((0, 0, 10, 10), 40, 0.5, max_upscale=10)
    region = frame.resize_region(np.full((10, 10, 3), 7, np.uint8), (0, 0, 10, 10), 20, 20)
    canvas = frame.place(region, layout, 255)
    assert canvas.shape == (40, 40, 3)
    assert (canvas[10:30, 10:30] == 7).all()
    canvas[10:30, 10:30] = 255
    assert (canvas == 255).all()
