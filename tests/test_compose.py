"""Compositing on white: exact white outside, no background tint at soft edges."""
import cv2
import numpy as np
import pytest

from hygiene import compose


def _red_disc_on_green(size=200):
    """A red disc with a soft (blurred) edge on a saturated green background."""
    alpha = np.zeros((size, size), np.uint8)
    cv2.circle(alpha, (size // 2, size // 2), size // 3, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 3)
    a = alpha.astype(np.float32)[..., None] / 255
    red, green = np.array([200, 30, 30], np.float32), np.array([20, 220, 20], np.float32)
    rgb = (red * a + green * (1 - a)).round().astype(np.uint8)
    return rgb, alpha


def test_on_white_is_exact_outside_and_untinted_at_edges():
    rgb, alpha = _red_disc_on_green()
    alpha = compose.tidy_alpha(alpha, 128, 0.05)
    naive = compose.on_white(rgb, alpha)
    fixed = np.asarray(compose.composite(compose.estimate_foreground(rgb, alpha), alpha, transparent=False))
    assert (fixed[alpha == 0] == 255).all()
    edge = (alpha > 20) & (alpha < 235)
    assert edge.sum() > 100
    # ideal: the red product alone blended onto white with the same alpha
    a = alpha.astype(np.float32)[..., None] / 255
    ideal = np.array([200, 30, 30], np.float32) * a + 255 * (1 - a)
    err_naive = np.abs(naive[edge].astype(np.float32) - ideal[edge]).mean()
    err_fixed = np.abs(fixed[edge].astype(np.float32) - ideal[edge]).mean()
    assert err_naive > 10  # the green rim is really there without estimation
    assert err_fixed < err_naive / 3


def test_tidy_alpha_drops_haze_and_small_blobs():
    alpha = np.full((100, 100), 5, np.uint8)  # faint haze everywhere
    alpha[20:80, 20:80] = 255  # product
    alpha[2:5, 90:93] = 255  # speck: 9 px vs 3600 px
    out = compose.tidy_alpha(alpha, 128, 0.05)
    assert (out[20:80, 20:80] == 255).all()
    assert out[3, 91] == 0
    assert (out[:10, :10] == 0).all()


def test_transparent_keeps_alpha():
    rgb, alpha = _red_disc_on_green(64)
    img = compose.composite(compose.estimate_foreground(rgb, alpha), alpha, transparent=True)
    assert img.mode == "RGBA"
    assert (np.asarray(img)[..., 3] == alpha).all()


@pytest.mark.slow
def test_blur_fusion_is_no_worse_than_pymatting_at_the_edge(sample_paths):
    """Halo metric of bench/profile_clean.py --halo on sample photos with their u2netp masks:
    each photo is put on a known green background, so its true foreground is known."""
    from PIL import Image

    from removers import segment

    err, naive = {"blur": [], "ml": []}, []
    for path in sample_paths[:4]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        alpha = compose.tidy_alpha(segment.predict_alpha(Image.fromarray(rgb), "u2netp"), 128, 0.05)
        a = alpha.astype(np.float32)[..., None] / 255
        photo = (rgb * a + np.array([20, 220, 20], np.float32) * (1 - a) + 0.5).astype(np.uint8)
        band = (alpha > 0) & (alpha < 255)
        for m in err:
            est = compose.estimate_foreground(photo, alpha, method=m)
            err[m].append(np.abs(est[band].astype(np.float32) - rgb[band]).mean())
        naive.append(np.abs(photo[band].astype(np.float32) - rgb[band]).mean())
    assert np.mean(err["blur"]) <= np.mean(err["ml"]) * 1.05, err
    assert np.mean(err["blur"]) < 0.8 * np.mean(naive), (err, naive)


def test_on_white_matches_the_float_blend_exactly():
    rng = np.random.default_rng(1)
    fg = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    a = alpha.astype(np.float64)[..., None] / 255
    want = np.floor(fg * a + 255 * (1 - a) + 0.5).astype(np.uint8)
    assert np.array_equal(compose.on_white(fg, alpha), want)
    assert (compose.on_white(fg, np.zeros_like(alpha)) == 255).all()


def test_unknown_estimator_is_refused():
    rgb, alpha = _red_disc_on_green(32)
    with pytest.raises(ValueError, match="method must be"):
        compose.estimate_foreground(rgb, alpha, method="closed-form")
