"""`shelfready clean --transparent`: cut-outs with alpha, written in a format that keeps it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import cli
from engines.job import BatchJob
from hygiene.config import CleanConfig
from photos.config import OutputConfig


@pytest.mark.parametrize(("asked", "written"), [("jpg", "png"), ("png", "png"), ("webp", "webp")])
def test_a_transparent_job_writes_a_format_with_alpha(tmp_path, asked, written):
    job = BatchJob(tmp_path, tmp_path / "out", clean=CleanConfig(transparent=True), output=OutputConfig(format=asked))
    assert job.output.format == written
    assert job.out_path(Path("a.jpg")) == tmp_path / "out" / f"a.{written}"
    opaque = BatchJob(tmp_path, tmp_path / "out", output=OutputConfig(format=asked))
    assert opaque.output.format == asked


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--format", "webp"]], ids=["default-format", "webp"])
def test_clean_transparent_cuts_out_every_photo(tmp_path, sample_paths, extra):
    src = tmp_path / "photos"
    src.mkdir()
    for p in sample_paths[:3]:
        shutil.copy(p, src / p.name)
    res = CliRunner().invoke(cli, ["clean", str(src), str(tmp_path / "cutouts"), "--transparent", "--quiet",
                                   "--workers", "1", *extra])
    assert res.exit_code == 0, res.output
    suffix = ".webp" if extra else ".png"
    rows = json.loads((tmp_path / "cutouts" / "summary.json").read_text())["photos"]
    assert len(rows) == 3 and all(r["status"] in ("cleaned", "needs_review") for r in rows), rows
    for p in sample_paths[:3]:
        out = tmp_path / "cutouts" / (p.stem + suffix)
        with Image.open(out) as im:
            assert im.mode == "RGBA", (out, im.mode)
            alpha = np.asarray(im.getchannel("A"))
        assert alpha.min() == 0 and alpha.max() == 255  # background gone, product kept
        assert (alpha == 0).mean() > 0.05
