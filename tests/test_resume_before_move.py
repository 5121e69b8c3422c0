"""An output folder written before the house move (tests/data/batch_before_move, see its README)
resumes: re-running the same `shelfready clean` over a copy skips both photos as already done."""
import json
import shutil
import subprocess

import pytest

from output_hashes import RECORD, ROOT, SHELFREADY, folder_hashes, other_cpu

BEFORE = ROOT / "tests" / "data" / "batch_before_move"
PHOTOS = ("dress.jpg", "t-shirt.jpg")  # the two smallest sample photos
MANIFEST = ".shelfready-manifest.jsonl"


@pytest.mark.slow  # a photo not skipped is cleaned with the model
def test_batch_made_before_the_move_resumes(tmp_path):
    other = other_cpu(json.loads(RECORD.read_text())["machine"])  # the folder was made on that machine too
    if other:  # the manifest's settings key holds the engine and precision `auto` picks on that CPU
        pytest.skip(f"batch_before_move's settings key is not this CPU's: {other}")
    (tmp_path / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy(ROOT / "sample_images" / name, tmp_path / "photos" / name)
    out = tmp_path / "batch_before_move"
    shutil.copytree(BEFORE, out)

    res = subprocess.run([str(SHELFREADY), "clean", "photos", "batch_before_move"], cwd=tmp_path,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert "2 photos: 0 cleaned, 0 need review, 0 failed, 2 already done" in res.stdout, (
        "the photos were not skipped: the manifest's settings key (clean settings, the engine auto picks, "
        "hygiene's code_version) or input sha256 no longer match\n" + res.stdout)
    assert folder_hashes(out) == folder_hashes(BEFORE)
    assert (out / MANIFEST).read_bytes() == (BEFORE / MANIFEST).read_bytes()
