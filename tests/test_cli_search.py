"""`shelfready catalog build|add`, `search`, `evaluate` through click's CliRunner on the sample photos."""
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_helpers import assert_too_few_queries_for_a_verdict
from PIL import Image, ImageOps

from cli.catalog_cmds import catalog_group, evaluate_cmd, search_cmd

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
QUERY_STEMS = ("hat-2", "shoes-2")


@pytest.mark.parametrize("cmd, args", [
    (catalog_group, ["build", "--help"]), (catalog_group, ["add", "--help"]),
    (search_cmd, ["--help"]), (evaluate_cmd, ["--help"]),
])
def test_help_has_example(cmd, args):
    res = CliRunner().invoke(cmd, args)
    assert res.exit_code == 0 and "Example: shelfready" in res.output


def test_search_needs_image_or_text(tmp_path):
    res = CliRunner().invoke(search_cmd, [str(tmp_path)])
    assert res.exit_code == 2 and "IMAGE or --text" in res.output


def test_evaluate_needs_queries(tmp_path):
    res = CliRunner().invoke(evaluate_cmd, ["--catalog", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--queries" in res.output


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A catalog of the 10 sample photos that are not queries, labels from file names."""
    base = tmp_path_factory.mktemp("cli")
    shop = base / "shop"
    shop.mkdir()
    for p in SAMPLES.glob("*.jpg"):
        if p.stem not in QUERY_STEMS:
            shutil.copy(p, shop / p.name)
    cat = base / "cat"
    res = CliRunner().invoke(catalog_group, ["build", str(shop), "--out", str(cat), "--index", "flat"])
    assert res.exit_code == 0, res.output
    assert "added 10, already present 0, failed 0" in res.output
    return base, shop, cat


@pytest.mark.slow
def test_build_refuses_existing_and_search_finds_itself(built):
    base, shop, cat = built
    again = CliRunner().invoke(catalog_group, ["build", str(shop), "--out", str(cat)])
    assert again.exit_code == 1 and "catalog add" in again.output
    res = CliRunner().invoke(search_cmd, [str(cat), str(shop / "dress.jpg"), "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)
    assert len(hits) == 3 and hits[0]["sku"] == "dress" and hits[0]["label"] == "dress"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and hits[0]["score"] >= hits[1]["score"]
    table = CliRunner().invoke(search_cmd, [str(cat), str(shop / "hat.jpg"), "-k", "2"])
    assert table.exit_code == 0 and table.output.splitlines()[0].split()[2] == "hat"
    text = CliRunner().invoke(search_cmd, [str(cat), "--text", "a red hat"])
    assert text.exit_code == 1 and "image-only" in text.output


@pytest.mark.slow
def test_default_flip_catalog_finds_mirrored_photos_and_a_plain_one_records_its_embedder(built, tmp_path):
    base, shop, flip = built  # built with the default embedder: mirror-averaged
    assert json.loads((flip / "catalog.json").read_text())["embedder"] == "cnn:efficientnet_lite0+flip"
    plain = tmp_path / "plain"
    res = CliRunner().invoke(catalog_group, ["build", str(shop), "--out", str(plain), "--index", "flat",
                                             "--embedder", "cnn:efficientnet_lite0"])
    assert res.exit_code == 0, res.output
    assert "cnn:efficientnet_lite0," in res.output  # the summary names the catalog's embedder
    with Image.open(shop / "dress.jpg") as im:
        ImageOps.mirror(im).save(tmp_path / "dress-mirrored.png")

    def top(catalog):
        out = CliRunner().invoke(search_cmd, [str(catalog), str(tmp_path / "dress-mirrored.png"), "--json"])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)[0]

    # each catalog's searches embed the way its header says: for +flip the mirror image is nearly the photo
    flipped, unflipped = top(flip), top(plain)
    assert flipped["sku"] == unflipped["sku"] == "dress"
    assert flipped["score"] > 0.99 > unflipped["score"]


@pytest.mark.slow
def test_add_skips_known_photos_and_takes_folder_labels(built, tmp_path):
    base, shop, cat = built
    new = tmp_path / "new"
    (new / "hat").mkdir(parents=True)
    shutil.copy(shop / "hat.jpg", new / "hat" / "hat-copy.jpg")  # same bytes: skipped
    with Image.open(shop / "hat.jpg") as im:
        ImageOps.mirror(im).save(new / "hat" / "hat-mirrored.jpg", quality=92)
    res = CliRunner().invoke(catalog_group, ["add", str(cat), str(new), "--labels-from-folders"])
    assert res.exit_code == 0, res.output
    assert "added 1, already present 1, failed 0" in res.output and "11 items" in res.output
    hits = json.loads(CliRunner().invoke(search_cmd, [str(cat), str(new / "hat" / "hat-mirrored.jpg"),
                                                      "--json"]).output)
    assert hits[0]["sku"] == "hat-mirrored" and hits[0]["label"] == "hat"


@pytest.mark.slow
def test_evaluate_writes_report_and_verdict(built, tmp_path, tmp_path_factory):
    base, shop, cat = built
    queries = tmp_path / "queries"
    for stem in QUERY_STEMS:
        label = stem.split("-")[0]
        (queries / label).mkdir(parents=True)
        shutil.copy(SAMPLES / f"{stem}.jpg", queries / label / f"{stem}.jpg")
    out = tmp_path / "report"
    cache = tmp_path_factory.getbasetemp() / "shelfready-eval-cache"  # shared with test_evaluate
    res = CliRunner().invoke(evaluate_cmd, ["--catalog", str(cat), "--queries", str(queries), "--out", str(out),
                                            "--cache-dir", str(cache), "--quiet"])
    assert res.exit_code == 0, res.output
    verdict = [ln for ln in res.output.splitlines() if ln.startswith("verdict: ")]
    assert f"report: {out / 'index.html'}" in res.output
    data = json.loads((out / "report.json").read_text())
    assert data["settings"]["n_queries"] == 2 and data["settings"]["n_catalog"] >= 10
    assert_too_few_queries_for_a_verdict(data)
    assert verdict == [f"verdict: {data['verdict']}"]  # the printed verdict is the report's


# ---------------------------------------------------------------- item text, shared catalogs

FORMAT1 = ROOT / "tests" / "data" / "catalog_format1"  # items with control characters (older versions)


def _controls(text: str) -> list[str]:
    """Control characters in ``text`` other than the line ends click writes."""
    import unicodedata

    return [c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c != "\n"]


@pytest.mark.slow
def test_search_never_prints_control_characters_of_stored_items(tmp_path):
    cat = tmp_path / "old"
    shutil.copytree(FORMAT1, cat)
    table = CliRunner().invoke(search_cmd, [str(cat), str(SAMPLES / "dress.jpg"), "-k", "3"])
    assert table.exit_code == 0, table.output
    assert not _controls(table.output) and len(table.output.splitlines()) == 3  # no forged lines
    first = table.output.splitlines()[0]
    assert "\\x1b[31mRED\\x1b[0m" in first and "dress\\x00nul" in first and "photos/dress.jpg" in first
    assert "HAT\\r\\nforged line" in table.output and "photos/hat\\x07.jpg" in table.output
    assert "chapeau été 👒" in table.output and "SHOE-靴" in table.output and "shoes\\x9b2J" in table.output
    raw = CliRunner().invoke(search_cmd, [str(cat), str(SAMPLES / "dress.jpg"), "-k", "3", "--json"])
    assert raw.exit_code == 0 and not _controls(raw.output)
    hits = json.loads(raw.output)  # JSON carries the stored text exactly, escaped in transit
    assert hits[0]["sku"] == "\x1b[31mRED\x1b[0m" and {h["label"] for h in hits} >= {"chapeau été 👒"}


@pytest.mark.slow
def test_add_refuses_control_characters_per_photo_and_keeps_unicode(built, tmp_path):
    base, shop, cat = built
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(SAMPLES / "hat-2.jpg", new / "chapeau-été-👒.jpg")
    shutil.copy(SAMPLES / "shoes-2.jpg", new / "evil\x1b[2J.jpg")
    res = CliRunner().invoke(catalog_group, ["add", str(cat), str(new)])
    assert res.exit_code == 1
    errors = res.stderr.splitlines()
    assert len(errors) == 1 and not _controls(res.stderr)
    assert "evil\\x1b[2J.jpg" in errors[0] and "sku contains a control character U+001B" in errors[0]
    assert "added 1, already present 0, failed 1" in res.stdout
    hits = json.loads(CliRunner().invoke(search_cmd, [str(cat), str(new / "chapeau-été-👒.jpg"),
                                                      "--json"]).output)
    assert hits[0]["sku"] == "chapeau-été-👒" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_add_gives_up_in_one_line_when_another_process_keeps_writing(built, tmp_path):
    import numpy as np

    from search import Catalog

    base, shop, cat = built
    new = tmp_path / "new"
    new.mkdir()
    with Image.open(shop / "dress.jpg") as im:
        ImageOps.flip(im).save(new / "dress-flipped.jpg", quality=92)
    holder = Catalog.open(cat, autosave=False)
    v = np.zeros((1, holder.dim), np.float32)
    v[0, 0] = 1.0
    holder.add(v)  # holds the write lock until save() or close()
    try:
        res = CliRunner().invoke(catalog_group, ["add", str(cat), str(new), "--lock-timeout", "0.5"])
    finally:
        holder.close()
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.startswith("Error: catalog ") and "is busy" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert "dress-flipped" not in {Catalog.open(cat).get(i).sku for i in Catalog.open(cat).ids()}
