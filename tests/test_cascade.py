"""The cascade: u2netp first, the strong remover only for the photos the gate does not trust.

Real photos (sample_images, some blurred so u2netp's cut-out is unsure) and real models.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFilter, ImageOps

from cli.main import cli
from hygiene import clean
from hygiene.config import CleanConfig
from removers import models
from removers.config import CASCADE, RuntimeConfig

STRONG = CleanConfig().cascade[1]


def test_cascade_name_resolves_in_the_config():
    c = CleanConfig(model=CASCADE)
    assert (c.model, c.fallback_model) == CleanConfig().cascade
    assert CleanConfig(model=CASCADE, fallback_model="u2net").fallback_model == "u2net"
    assert CleanConfig(model="u2netp", fallback_model="u2netp").fallback_model == ""  # no self-cascade
    assert CleanConfig().fallback_model == ""  # the AGPL model is never used unless asked for
    chain = CleanConfig(fallback_model=" isnet-imgly , u2net,isnet-imgly,u2netp,")
    assert chain.fallback_model == "isnet-imgly,u2net"  # a chain: in order, once each, never the first model
    assert chain.fallback_models == ("isnet-imgly", "u2net") and CleanConfig().fallback_models == ()
    assert chain.fingerprint() == CleanConfig(fallback_model="isnet-imgly,u2net").fingerprint()
    assert chain.fingerprint() != CleanConfig(fallback_model="u2net,isnet-imgly").fingerprint()
    assert c.fingerprint() != CleanConfig().fingerprint()


@pytest.fixture(scope="module")
def strong_present(isnet_path):
    """The cascade's weights: the opt-in strong remover (``isnet_path`` skips without it) and u2netp."""
    try:
        models.verify("u2netp")
    except models.ModelError as exc:
        pytest.skip(f"cascade weights absent ({exc})")


def _photos(sample_paths) -> dict[str, Image.Image]:
    """Sample photos as shot, plus blurred copies (an unsure u2netp mask on some of them)."""
    out = {}
    for path in sample_paths:
        if path.stem not in ("dress", "outwear", "pants", "shoes"):
            continue
        with Image.open(path) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        out[path.stem] = rgb
        out[f"{path.stem}-blurred"] = rgb.filter(ImageFilter.GaussianBlur(4))
    return out


@pytest.mark.slow
def test_only_untrusted_photos_go_to_the_strong_model(strong_present, sample_paths):
    size, rt = 256, RuntimeConfig(isnet_side=1024)  # the side at which these photos cover all three ways
    fast, strong = CleanConfig(size=size, runtime=rt), CleanConfig(model=STRONG, size=size, runtime=rt)
    cascade = CleanConfig(model=CASCADE, size=size, runtime=rt)
    ways = set()
    for name, photo in _photos(sample_paths).items():
        first = clean(photo, fast)
        got = clean(photo, cascade)
        if first.status == "cleaned":  # trusted: the strong model never runs
            ways.add("first")
            assert got.model == "u2netp" and got.status == "cleaned", name
            assert "cascade" not in got.report and "segment_fallback" not in got.timings, name
            assert np.array_equal(np.asarray(got.image), np.asarray(first.image)), name
            continue
        alone = clean(photo, strong)  # what the strong model does with this photo on its own
        ways.add("strong-" + alone.status)
        assert got.model == STRONG, name
        assert got.status == alone.status and got.reasons == alone.reasons, name
        assert np.array_equal(got.mask, alone.mask), name
        assert np.array_equal(np.asarray(got.image), np.asarray(alone.image)), name
        assert got.report["cascade"]["first_model"] == "u2netp"
        assert got.report["cascade"]["first_reasons"] == first.reasons
        assert got.timings["segment_fallback"] > 0
    # the set covers all three ways: trusted first mask, rescued by the strong one, safe crop
    assert ways == {"first", "strong-cleaned", "strong-needs_review"}, ways


@pytest.mark.slow
def test_batch_summary_names_the_model_of_each_photo(strong_present, sample_paths, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    photos = _photos(sample_paths)
    for name in ("dress", "outwear-blurred"):
        photos[name].save(src / f"{name}.jpg", quality=95)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["clean", str(src), str(out), "--model", CASCADE, "--size", "256",
                                      "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = {r["rel"]: r for r in json.loads((out / "summary.json").read_text())["photos"]}
    expected = {}
    for rel in rows:
        with Image.open(src / rel) as im:
            first = clean(im.convert("RGB"), CleanConfig(size=256))
        expected[rel] = "u2netp" if first.status == "cleaned" else STRONG
    assert {rel: r["model"] for rel, r in rows.items()} == expected
    assert set(expected.values()) == {"u2netp", STRONG}  # one photo each way
    with (out / "summary.csv").open() as fh:
        assert {r["rel"]: r["model"] for r in csv.DictReader(fh)} == expected
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert (settings["model"], settings["fallback_model"]) == ("u2netp", STRONG)


@pytest.mark.slow
def test_evaluation_report_names_the_model_of_each_photo(strong_present, sample_paths, tmp_path):
    from search import create_embedder, datasets
    from search.evaluate import EvalConfig, evaluate
    from search.report import write_report

    photos = _photos(sample_paths)
    qdir = tmp_path / "queries"
    qdir.mkdir()
    photos["outwear-blurred"].save(qdir / "outwear-2.jpg", quality=95)
    photos["dress"].save(qdir / "dress-2.jpg", quality=95)
    queries = datasets.from_stems(sorted(qdir.glob("*.jpg")))
    catalog = datasets.from_stems([p for p in sample_paths if p.stem in ("dress", "outwear", "hat", "shoes")])
    config = CleanConfig(model=CASCADE, size=256)
    ev = evaluate(queries, catalog, create_embedder("cnn:efficientnet_lite0"), clean_config=config,
                  config=EvalConfig(cache_dir=tmp_path / "cache"), progress=False)
    expected = {}
    for q in queries:
        with Image.open(q.path) as im:
            expected[q.path.name] = ("u2netp" if clean(im.convert("RGB"), CleanConfig(size=256)).status == "cleaned"
                                     else STRONG)
    assert {Path(p["path"]).name: p["model"] for p in ev.photos} == expected
    assert set(expected.values()) == {"u2netp", STRONG}
    out = write_report(ev, tmp_path / "report")
    with (tmp_path / "report" / "per_photo.csv").open() as fh:
        assert {Path(r["path"]).name: r["model"] for r in csv.DictReader(fh)} == expected
    html = out.read_text()
    assert f"then {STRONG} for cut-outs the gate did not trust (query masks by {STRONG}: 1, u2netp: 1)" in html


def test_each_remover_has_its_own_gate():
    from hygiene.config import MODEL_GATES, GateConfig

    c = CleanConfig(model=CASCADE)
    own = dict(MODEL_GATES)[STRONG]
    assert c.gate_for(STRONG) == own and c.gate_for("u2netp") == c.gate
    assert own != GateConfig()  # fitted on the strong remover's own masks (bench.calibrate_gate --labelled)
    off = CleanConfig(model=CASCADE, gate=GateConfig(enabled=False))
    assert off.gate_for(STRONG) == off.gate  # gate off means off for every remover
    assert CleanConfig(model=CASCADE, model_gates=()).fingerprint() != c.fingerprint()


@pytest.mark.slow
def test_the_strong_mask_is_judged_by_the_strong_models_gate(strong_present, sample_paths):
    """The same photo and masks, only the strong remover's gate changed: the outcome follows it."""
    from hygiene.config import GateConfig

    photo = _photos(sample_paths)["outwear-blurred"]
    refuse_first = GateConfig(max_fg_share=0.0)  # fails any mask: every photo goes to the strong model
    base = dict(model=CASCADE, size=256, gate=refuse_first)
    trusting = clean(photo, CleanConfig(**base, model_gates=((STRONG, GateConfig(max_undecided=1.0,
                     max_border_touch=1.0, max_fg_share=1.0, max_objects=99)),)))
    strict = clean(photo, CleanConfig(**base, model_gates=((STRONG, refuse_first),)))
    assert trusting.model == strict.model == STRONG
    assert np.array_equal(trusting.mask, strict.mask)
    assert trusting.status == "cleaned" and trusting.report["gate"]["passed"]
    assert strict.status == "needs_review" and any("covers almost the whole photo" in r for r in strict.reasons)
    assert trusting.report["cascade"]["first_reasons"] == strict.report["cascade"]["first_reasons"]


@pytest.mark.slow
@pytest.mark.devdata("grocery_store")
def test_a_refused_speck_mask_keeps_the_whole_photo(strong_present, dev_data):
    """A grocery shelf photo whose IS-Net mask is a few-pixel blob: the cascade refuses it and
    keeps the whole photo (before: a safe crop around the blob, a 6x6 px image)."""
    path = dev_data / "grocery_store/dataset/train/Fruit/Apple/Pink-Lady/Pink-Lady_006.jpg"
    with Image.open(path) as im:
        photo = ImageOps.exif_transpose(im).convert("RGB")
    # the reference engine: on a CPU with native bf16, auto runs IS-Net in bf16, whose mask of
    # this photo is empty rather than a speck (refused all the same)
    got = clean(photo, CleanConfig(model=CASCADE, runtime=RuntimeConfig(runtime="onnxruntime", precision="fp32")))
    assert got.model == STRONG and got.status == "needs_review"
    ys, xs = np.nonzero(got.mask >= 128)
    assert xs.size and max(np.ptp(xs), np.ptp(ys)) + 1 < 0.1 * min(photo.size)  # the mask is a speck
    assert got.image.size == photo.size  # the photo as it is
