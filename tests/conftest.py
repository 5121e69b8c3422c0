"""Shared fixtures: the shipped sample photos, the committed test photos, and the
optional dev data.

The dev data (real datasets too large or not licensed to ship: GrabCut ground
truth, the full grocery and clothing sets) lives in ``../shared/data`` beside
the repository, or wherever ``SHELFREADY_DEV_DATA`` points. Tests that need it
are marked ``@pytest.mark.devdata("sub/folder", ...)`` and take the ``dev_data``
fixture; when a folder is missing they are skipped with one line naming it, so
a fresh clone passes ``make test``. With the dev data present nothing is skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
TEST_DATA = Path(__file__).resolve().parent / "data"
DEV_DATA_ENV = "SHELFREADY_DEV_DATA"


def dev_data_root() -> Path:
    """Where the optional dev data is: $SHELFREADY_DEV_DATA, else ../shared/data beside the repo."""
    override = os.environ.get(DEV_DATA_ENV)
    return Path(override).expanduser() if override else ROOT.parent / "shared" / "data"


def dev_data_missing(*parts: str) -> str | None:
    """One line naming the first missing dev-data folder, or None when all are there."""
    root = dev_data_root()
    for sub in parts or ("",):
        if not (root / sub).exists():
            return (f"dev data not found: {root / sub} (put the datasets in ../shared/data beside the repo "
                    f"or set {DEV_DATA_ENV})")
    return None


def pytest_addoption(parser):
    parser.addoption("--screenshot-dir", default=None,
                     help="also save the report screenshots the browser tests take here (e.g. docs/)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "devdata(*folders): needs the optional dev data (folders under it); skipped when absent")


def pytest_runtest_setup(item):
    for marker in item.iter_markers("devdata"):
        reason = dev_data_missing(*marker.args)
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def dev_data() -> Path:
    """The dev data root; skips the test when it is absent (mark the test ``devdata`` too)."""
    reason = dev_data_missing()
    if reason:
        pytest.skip(reason)
    return dev_data_root()


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    paths = sorted(SAMPLES.glob("*.jpg"))
    assert len(paths) >= 10, f"sample images missing in {SAMPLES}"
    return paths


@pytest.fixture(scope="session")
def tshirt_path() -> Path:
    """A t-shirt laid flat (clothing-dataset-small, CC0): u2netp's mask of it is trustworthy."""
    return TEST_DATA / "tshirt-flat.jpg"


@pytest.fixture(scope="session")
def shelf_carton_path() -> Path:
    """A carton held in front of a shop shelf (GroceryStoreDataset, MIT): u2netp cuts the hand, not the carton."""
    return TEST_DATA / "oatghurt-shelf.jpg"


@pytest.fixture(scope="session")
def shoe_pair_path() -> Path:
    """A pair of slides side by side (clothing-dataset-small, CC0): u2netp cuts two matching blobs."""
    return TEST_DATA / "shoes-pair.jpg"


@pytest.fixture(scope="session")
def pants_blanket_path() -> Path:
    """Dark trousers on a patterned blanket (clothing-dataset-small, CC0): u2netp's mask is unsure, u2net's is not."""
    return TEST_DATA / "pants-blanket.jpg"


def _opt_in_weights(name: str) -> Path:
    """The checked weights of an opt-in model, or a skip naming what is wrong."""
    from removers import models

    try:
        return models.verify(name)
    except models.ModelError as exc:
        pytest.skip(f"{name} weights absent ({exc})")


@pytest.fixture(scope="session")
def u2net_path() -> Path:
    """The opt-in full U^2-Net weights (`shelfready models fetch u2net`); tests skip without them."""
    return _opt_in_weights("u2net")


@pytest.fixture(scope="session")
def isnet_path() -> Path:
    """The opt-in IS-Net weights (`shelfready models fetch isnet-imgly`); tests skip without them."""
    from removers import isnet

    return _opt_in_weights(isnet.NAME)


@pytest.fixture(scope="session")
def made_demo() -> tuple[Path, str]:
    """`make demo` as README's quick start runs it, once a session: (its output folder, its stdout).
    README's block and the demo's own tests read the same run."""
    import subprocess

    res = subprocess.run(["bash", "-c", "make demo"], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return ROOT / "out" / "demo", res.stdout


@pytest.fixture(scope="session")
def ppocr_det_path() -> Path:
    """The opt-in PP-OCRv4 text detector (`shelfready models fetch ppocr-det`); tests skip without it."""
    return _opt_in_weights("ppocr-det")
