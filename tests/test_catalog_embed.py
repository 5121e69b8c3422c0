"""`shelfready catalog build --embed fused|clean`: the vector kind is recorded, searched and added alike."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.catalog_cmds import catalog_group, search_cmd
from hygiene.config import CleanConfig
from photos.io import load_image
from search import Catalog, create_embedder
from search.embed_modes import cleaned_view, embed_header, embed_images, fuse, settings_of

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
EMBEDDER = "cnn:efficientnet_lite0"


def test_embed_header_round_trip():
    assert embed_header("raw") == {"mode": "raw"}
    mode, config, view = settings_of(embed_header("fused", CleanConfig(model="cascade")))
    assert mode == "fused" and config.model == "u2netp" and config.fallback_model == "isnet-imgly"
    assert view.background == "white"
    assert settings_of({})[0] == "raw"  # a catalog made before the option: raw
    with pytest.raises(ValueError):
        embed_header("blurry")
    with pytest.raises(ValueError, match="unknown"):
        settings_of({"mode": "other"})


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    base = tmp_path_factory.mktemp("embed")
    for stem in ("dress", "hat", "shoes", "pants"):
        shutil.copy(SAMPLES / f"{stem}.jpg", base / f"{stem}.jpg")
    return base


def _build_fused(shop: Path, out: Path) -> Path:
    """`catalog build --embed fused` of the shop's photos into ``out``."""
    res = CliRunner().invoke(catalog_group, ["build", str(shop), "--out", str(out), "--embed", "fused",
                                             "--embedder", EMBEDDER, "--quiet"])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_fused_catalog_stores_the_fused_vectors(shop, tmp_path):
    out = _build_fused(shop, tmp_path / "cat")
    header = json.loads((out / "catalog.json").read_text())
    assert header["embed"]["mode"] == "fused" and header["embed"]["model"] == "u2netp"

    # each stored vector is the normalised mean of the photo's raw and cleaned embeddings, made here anew
    emb = create_embedder(EMBEDDER)
    image = load_image(shop / "dress.jpg")
    raw = emb.embed([image])
    cleaned = emb.embed([cleaned_view(image, CleanConfig())])
    expected = fuse(raw, cleaned)
    assert not np.allclose(raw, cleaned, atol=1e-3)  # the cleanup changed what the embedder saw
    with Catalog.open(out) as cat:
        assert cat.embed["mode"] == "fused" and len(cat) == 4
        hit = cat.search(expected, 1)[0][0]
        assert hit.sku == "dress" and hit.score == pytest.approx(1.0, abs=1e-4)
        assert cat.search(raw, 1)[0][0].score < 0.999  # a raw vector is not what is stored
    assert np.allclose(embed_images([image], emb, "fused"), expected, atol=1e-5)

    # `search` embeds the query the catalog's way (fused: the photo scores 1 against itself) unless told
    res = CliRunner().invoke(search_cmd, [str(out), str(shop / "dress.jpg"), "-k", "1", "--json"])
    assert res.exit_code == 0, res.output
    hit = json.loads(res.output)[0]
    assert hit["sku"] == "dress" and hit["score"] == pytest.approx(1.0, abs=1e-4)
    res = CliRunner().invoke(search_cmd, [str(out), str(shop / "dress.jpg"), "-k", "1", "--json",
                                          "--query-embed", "raw"])
    assert res.exit_code == 0 and json.loads(res.output)[0]["score"] < 0.999

    # `catalog add` follows the header: an added photo is stored fused too
    more = tmp_path / "more"
    more.mkdir()
    shutil.copy(SAMPLES / "skirt.jpg", more / "skirt.jpg")
    res = CliRunner().invoke(catalog_group, ["add", str(out), str(more)])
    assert res.exit_code == 0, res.output
    skirt = load_image(more / "skirt.jpg")
    with Catalog.open(out) as cat:
        hit = cat.search(embed_images([skirt], emb, "fused"), 1)[0][0]
        assert hit.sku == "skirt" and hit.score == pytest.approx(1.0, abs=1e-4)


def test_default_catalog_is_raw_and_ray_refuses_fused(shop, tmp_path):
    res = CliRunner().invoke(catalog_group, ["build", str(shop), "--out", str(tmp_path / "raw"),
                                             "--embedder", EMBEDDER, "--quiet"])
    assert res.exit_code == 0, res.output
    with Catalog.open(tmp_path / "raw") as cat:
        assert cat.embed == {"mode": "raw"}
        image = load_image(shop / "hat.jpg")
        hit = cat.search(create_embedder(EMBEDDER).embed([image]), 1)[0][0]
        assert hit.sku == "hat" and hit.score == pytest.approx(1.0, abs=1e-4)
    res = CliRunner().invoke(catalog_group, ["build", str(shop), "--out", str(tmp_path / "r"), "--embed", "fused",
                                             "--engine", "ray"])
    assert res.exit_code == 2 and "local engine only" in res.output


@pytest.mark.slow
def test_api_adds_and_searches_a_fused_catalog_the_fused_way(shop, tmp_path):
    from conftest_api import running_server

    out = _build_fused(shop, tmp_path / "cat")
    skirt_bytes = (SAMPLES / "skirt.jpg").read_bytes()
    with running_server(catalog=str(out), workers=1, timeout=600, warmup=False) as srv, srv.client() as c:
        # a photo added through the API gets a fused vector, like the CLI's
        r = c.post("/v1/catalog/items", files={"photo": ("s.jpg", skirt_bytes)}, data={"sku": "skirt"})
        assert r.status_code in (200, 201), r.text
        # and a search with the same photo is embedded fused too: it scores 1 against itself
        r = c.post("/v1/search", files={"photo": ("s.jpg", skirt_bytes)}, data={"k": "1"})
        assert r.status_code == 200, r.text
        hit = r.json()["hits"][0]
        assert hit["sku"] == "skirt" and hit["score"] == pytest.approx(1.0, abs=1e-4)
    emb = create_embedder(EMBEDDER)
    with Catalog.open(out) as cat:
        expected = embed_images([load_image(SAMPLES / "skirt.jpg")], emb, "fused")
        hit = cat.search(expected, 1)[0][0]
        assert hit.sku == "skirt" and hit.score == pytest.approx(1.0, abs=1e-4)
