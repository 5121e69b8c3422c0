"""Shared fixtures: the shipped sample photos and the dev data beside the repo."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    paths = sorted(SAMPLES.glob("*.jpg"))
    assert len(paths) >= 10, f"sample images missing in {SAMPLES}"
    return paths


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"dev data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA
