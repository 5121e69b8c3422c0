"""Happy paths of documented commands and options (README "Commands", "Scaling out"), run through
the CLI on real photos with the real models; each checks what the option changes in the output."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from eval_helpers import assert_too_few_queries_for_a_verdict
from PIL import Image

from cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
QUERY_STEMS = ("hat-2", "shoes-2")
EMBEDDER = "cnn:efficientnet_lite0"  # the plain embedder: half the model work of the default +flip

pytestmark = pytest.mark.slow


def shelfready(*args: str) -> str:
    """`shelfready ARGS` in-process; asserts exit code 0 and returns the output."""
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def copy_samples(dst: Path, stems, by_label: bool = False) -> Path:
    """The sample photos named by ``stems`` in ``dst`` (in ``dst/<label>/`` with ``by_label``)."""
    for stem in stems:
        folder = dst / stem.split("-")[0] if by_label else dst
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / f"{stem}.jpg", folder / f"{stem}.jpg")
    return dst


def shop_stems() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.jpg") if p.stem not in QUERY_STEMS)


# ---------------------------------------------------------------- clean --fill --size


def test_clean_fill_and_size_override_the_preset(tmp_path):
    """`shelfready clean photos/ ready/ --fill 0.8 --size 2000`: a 2000 px square canvas whose
    product's longer side is 80 % of it (amazon's own: 1600 px at 0.85), measured on the pixels."""
    src = tmp_path / "photos"
    src.mkdir()
    with Image.open(SAMPLES / "dress.jpg") as im:  # 400 px photos would need more than --max-upscale
        im.resize((im.width * 3, im.height * 3), Image.Resampling.LANCZOS).save(src / "dress.jpg", quality=95)
    out = tmp_path / "ready"
    output = shelfready("clean", src, out, "--fill", "0.8", "--size", "2000", "--workers", "1", "--quiet")
    assert "1 photos: 1 cleaned" in output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["settings"]["fill"], summary["settings"]["size"]) == (0.8, 2000)
    with Image.open(out / "dress.jpg") as im:
        assert im.size == (2000, 2000)
        px = np.asarray(im.convert("RGB"))
    ys, xs = np.nonzero((px < 250).any(axis=-1))  # the product on the white canvas
    longer = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    assert abs(longer / 2000 - 0.8) <= 0.01, longer
    assert abs((xs.min() + xs.max()) / 2 - 1000) <= 20 and abs((ys.min() + ys.max()) / 2 - 1000) <= 20
    row = summary["photos"][0]
    # 0.8 is below amazon's fill range (0.85-1.0): cleaned as asked, and the fill check says so
    # (the 3x upscaled photo may fail sharpness too)
    assert row["status"] == "cleaned" and "fill" in row["failed_checks"].split(","), row


# ---------------------------------------------------------------- catalog build --labels --index hnsw


def test_catalog_build_with_a_labels_csv_and_an_hnsw_index(tmp_path):
    """`shelfready catalog build products/ --labels labels.csv --out cat/ --index hnsw`: the CSV
    decides which photos go in and their labels and skus (none of them the file names'), and the
    index is HNSW; searching with a listed photo finds its own row."""
    products = copy_samples(tmp_path / "products", shop_stems())
    listed = ["dress", "hat", "pants", "shoes", "skirt"]  # the folder holds 10; the CSV lists 5
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "sku"])
        for i, stem in enumerate(listed):
            w.writerow([f"{stem}.jpg", f"cat-{stem}", f"SKU-{i:03d}"])
    out = tmp_path / "cat"
    output = shelfready("catalog", "build", products, "--labels", labels, "--out", out, "--index", "hnsw")
    assert "added 5, already present 0, failed 0" in output and "5 items" in output and "hnsw index" in output
    header = json.loads((out / "catalog.json").read_text())
    assert (header["requested_index_type"], header["index_type"]) == ("hnsw", "hnsw")
    from search import Catalog

    with Catalog.open(out) as cat:
        rows = sorted((Path(it.path).stem, it.label, it.sku) for it in cat.items())
    assert rows == [(stem, f"cat-{stem}", f"SKU-{listed.index(stem):03d}") for stem in sorted(listed)]
    hits = json.loads(shelfready("search", out, products / "pants.jpg", "-k", "3", "--json"))
    assert hits[0]["sku"] == "SKU-002" and hits[0]["label"] == "cat-pants"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and hits[1]["score"] < hits[0]["score"]


# ---------------------------------------------------------------- search --text (CLIP)


def test_search_text_on_a_clip_catalog_ranks_by_the_text_tower(tmp_path):
    """`shelfready search clipcat/ --text "red sneakers"` on a catalog built with an open_clip model
    from a local checkpoint (ViT-S-32 with seeded random weights: no CLIP weights can be
    downloaded here). The hits and scores are those of open_clip itself, loaded here from the same
    checkpoint: its text tower's embedding of the query against its image tower's of each photo."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        torch.save(open_clip.create_model("ViT-S-32").state_dict(), tmp_path / "vit-s-32.pt")
    name = f"clip:ViT-S-32/{tmp_path / 'vit-s-32.pt'}"
    shop = copy_samples(tmp_path / "shop", ["dress", "hat", "shoes", "shorts", "skirt", "t-shirt"])
    out = tmp_path / "clipcat"
    shelfready("catalog", "build", shop, "--out", out, "--embedder", name, "--index", "flat", "--quiet")
    assert json.loads((out / "catalog.json").read_text())["embedder"] == name
    hits = json.loads(shelfready("search", out, "--text", "red sneakers", "-k", "3", "--json"))

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-S-32", pretrained=str(tmp_path / "vit-s-32.pt"))
    model.eval()
    stems = sorted(p.stem for p in shop.glob("*.jpg"))
    with torch.inference_mode():
        text = model.encode_text(open_clip.get_tokenizer("ViT-S-32")(["red sneakers"]))
        images = model.encode_image(torch.stack([preprocess(Image.open(shop / f"{s}.jpg").convert("RGB"))
                                                 for s in stems]))
    scores = (torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T)
    want = dict(zip(stems, scores[:, 0].tolist()))
    assert len(hits) == 3 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        assert h["score"] == pytest.approx(want[h["sku"]], abs=1e-4), (h, want)
    assert hits[0]["score"] >= max(want.values()) - 1e-4  # the best photo for the text comes first
    # an image query on the same catalog runs the image tower: the photo finds itself
    same = json.loads(shelfready("search", out, shop / "hat.jpg", "-k", "1", "--json"))
    assert same[0]["sku"] == "hat" and same[0]["score"] == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    """A plain-embedder catalog of the 10 shop photos, the 2 query photos in label folders, and an
    evaluation cache shared by this module's runs (cleaned photos are cleaned once)."""
    base = tmp_path_factory.mktemp("evaluate")
    shop = copy_samples(base / "shop", shop_stems())
    cat = base / "cat"
    shelfready("catalog", "build", shop, "--out", cat, "--embedder", EMBEDDER, "--index", "flat", "--quiet")
    queries = copy_samples(base / "queries", QUERY_STEMS, by_label=True)
    return cat, queries, base / "cache"


def evaluate_into(out: Path, cat: Path, cache: Path, *args) -> tuple[str, dict]:
    """`shelfready evaluate --catalog CAT ... --out OUT`: (output, report.json)."""
    output = shelfready("evaluate", "--catalog", cat, "--out", out, "--cache-dir", cache, "--quiet", *args)
    assert f"report: {out / 'index.html'}" in output
    data = json.loads((out / "report.json").read_text())
    assert f"verdict: {data['verdict']}" in output.splitlines()
    return output, data


def test_evaluate_clean_catalog_scores_cleaned_queries_against_a_cleaned_catalog(eval_setup, tmp_path):
    """`shelfready evaluate --catalog cat/ --queries shots/ --clean-catalog --out report/`."""
    cat, queries, cache = eval_setup
    output, data = evaluate_into(tmp_path / "report", cat, cache, "--queries", queries, "--clean-catalog")
    assert data["variants"][0] == "raw/raw" and "clean/clean" in data["variants"]
    assert data["headline"] == "clean/clean"  # the cleaned-catalog comparison gives the verdict
    assert_too_few_queries_for_a_verdict(data)
    assert sorted(Path(p["path"]).stem for p in data["photos"]) == sorted(QUERY_STEMS)
    for p in data["photos"]:
        assert 1 <= p["rank_clean_clean"] <= 10 and p["rr_clean_clean"] == pytest.approx(1 / p["rank_clean_clean"])
    # the catalog side was cleaned too: every listing has its cleaned photo, used in the ranking
    assert len(data["catalog"]) == 10
    for row in data["catalog"]:
        assert row["status"] in ("cleaned", "needs_review") and Path(row["cleaned_path"]).is_file(), row
    with (tmp_path / "report" / "per_photo.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 and "rank_clean_clean" in table[0]


@pytest.mark.ray
def test_evaluate_clean_catalog_on_ray_scores_as_the_local_engine(eval_setup, tmp_path, local_ray):
    """`... --clean-catalog --engine ray`: cleanup and embedding on Ray actors (a fresh cache, so
    they do all of it), the same metrics and ranks as the local engine."""
    cat, queries, cache = eval_setup
    _, local = evaluate_into(tmp_path / "local", cat, cache, "--queries", queries, "--clean-catalog")
    _, ray = evaluate_into(tmp_path / "ray", cat, tmp_path / "ray-cache", "--queries", queries, "--clean-catalog",
                           "--engine", "ray", "--workers", "2")
    assert ray["variants"] == local["variants"] and "clean/clean" in local["variants"]
    assert ray["metrics"] == local["metrics"] and ray["verdict"] == local["verdict"]
    ranks = [{k: v for k, v in p.items() if k.startswith("rank_")} for p in local["photos"]]
    assert [{k: v for k, v in p.items() if k.startswith("rank_")} for p in ray["photos"]] == ranks
    # the actors filled the fresh cache: cleaned queries and listings
    assert len(list((tmp_path / "ray-cache").rglob("*.png")) + list((tmp_path / "ray-cache").rglob("*.jpg"))) >= 12


def test_evaluate_queries_csv_takes_paths_and_labels_from_the_csv(eval_setup, tmp_path):
    """`shelfready evaluate --queries-csv shots.csv`: paths relative to the CSV, labels from it (the
    folders' names are not labels here)."""
    cat, _, cache = eval_setup
    shots = copy_samples(tmp_path / "csv" / "shots", QUERY_STEMS)
    table = tmp_path / "csv" / "queries.csv"
    table.write_text("path,label\nshots/hat-2.jpg,hat\nshots/shoes-2.jpg,shoes\n")
    _, data = evaluate_into(tmp_path / "report", cat, cache, "--queries-csv", table)
    assert data["settings"]["n_queries"] == 2
    got = {Path(p["path"]).name: p["label"] for p in data["photos"]}
    assert got == {"hat-2.jpg": "hat", "shoes-2.jpg": "shoes"}
    assert {Path(p["path"]).parent for p in data["photos"]} == {shots}
    # the same photos and labels as the folder form: the same ranks
    _, folders = evaluate_into(tmp_path / "folders", cat, cache, "--queries", eval_setup[1])
    assert ([p["rank_raw_raw"] for p in data["photos"]] == [p["rank_raw_raw"] for p in folders["photos"]])


def test_evaluate_view_grey_and_blur_change_what_the_embedder_sees_of_cleaned_photos(eval_setup, tmp_path):
    """`shelfready evaluate ... --view grey` and `--view blur`: the cleaned queries are embedded on a
    grey or blurred-photo background (recorded in the report), so their scores move; the raw ones
    do not."""
    cat, queries, cache = eval_setup
    runs = {view: evaluate_into(tmp_path / view, cat, cache, "--queries", queries, "--view", view)[1]
            for view in ("white", "grey", "blur")}
    for view, data in runs.items():
        clean_views = [v for v in data["settings"]["views"].values() if v["background"] == view]
        assert clean_views, (view, data["settings"]["views"])
        assert_too_few_queries_for_a_verdict(data)

    def scores(view: str, variant: str, cleaned_only: bool = False) -> list[float]:
        return [p[f"top1_score_{variant}"] for p in sorted(runs[view]["photos"], key=lambda p: p["path"])
                if p["status"] == "cleaned" or not cleaned_only]  # a safe crop has no view to compose

    assert scores("grey", "raw_raw") == scores("blur", "raw_raw") == scores("white", "raw_raw")
    white, grey, blur = (np.array(scores(v, "clean_raw", cleaned_only=True)) for v in ("white", "grey", "blur"))
    assert white.size >= 1
    assert np.abs(grey - white).min() > 1e-4 and np.abs(blur - white).min() > 1e-4
    assert np.abs(blur - grey).min() > 1e-4


# ---------------------------------------------------------------- catalog build --embed clean


def test_catalog_build_embed_clean_stores_the_cleaned_photos_vectors(tmp_path):
    """`shelfready catalog build shop/ --embed clean`: each item's vector is the embedding of the
    photo as `hygiene.clean` outputs it (made here anew), not of the photo as given; `search`
    embeds a query the same way unless `--query-embed raw`."""
    from hygiene import CleanConfig, clean
    from photos.io import load_image
    from search import Catalog, create_embedder

    shop = copy_samples(tmp_path / "shop", ["dress", "hat", "shoes", "skirt"])
    out = tmp_path / "cat"
    shelfready("catalog", "build", shop, "--out", out, "--embed", "clean", "--embedder", EMBEDDER,
               "--index", "flat", "--quiet")
    header = json.loads((out / "catalog.json").read_text())
    assert header["embed"]["mode"] == "clean" and header["embed"]["model"] == "u2netp"
    emb = create_embedder(EMBEDDER)
    image = load_image(shop / "dress.jpg")
    cleaned = emb.embed([clean(image, CleanConfig()).image.convert("RGB")])
    raw = emb.embed([image])
    with Catalog.open(out) as cat:
        hit = cat.search(cleaned, 1)[0][0]
        assert hit.sku == "dress" and hit.score == pytest.approx(1.0, abs=1e-4)
        assert cat.search(raw, 1)[0][0].score < 0.99  # the raw photo's vector is not what is stored
    same = json.loads(shelfready("search", out, shop / "dress.jpg", "-k", "1", "--json"))[0]
    assert same["sku"] == "dress" and same["score"] == pytest.approx(1.0, abs=1e-4)
    as_raw = json.loads(shelfready("search", out, shop / "dress.jpg", "-k", "1", "--json", "--query-embed", "raw"))
    assert as_raw[0]["score"] < 0.99


# ---------------------------------------------------------------- --precision


def test_clean_precision_is_what_runs_and_is_recorded(tmp_path):
    """`shelfready clean --precision fp32` and `--precision bf16`: the summary records the precision
    that ran (bf16 only where this CPU has it natively, else fp32 with the reason in `models list`);
    where bf16 runs its masks differ a little from fp32's, so the photos differ a little too."""
    from removers import runtime

    src = copy_samples(tmp_path / "in", ["dress", "shoes"])
    native = runtime.detect().native_bf16
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        shelfready("clean", src, out, "--precision", precision, "--size", "512", "--workers", "1", "--quiet")
        settings = json.loads((out / "summary.json").read_text())["settings"]["runtime"]
        runs[precision] = (settings, {p.name: np.asarray(Image.open(p).convert("RGB"), np.int16)
                                      for p in sorted(out.glob("*.jpg"))})
    assert runs["fp32"][0]["precision"] == "fp32"
    assert runs["bf16"][0]["precision"] == ("bf16" if native else "fp32")
    fp32, bf16 = runs["fp32"][1], runs["bf16"][1]
    assert fp32.keys() == bf16.keys() == {"dress.jpg", "shoes.jpg"}
    diffs = [np.abs(fp32[n] - bf16[n]).mean() for n in fp32]
    assert max(diffs) < 2.0, diffs  # the same photos (the accuracy guard holds bf16 masks to IoU 0.99)
    if native:
        assert max(diffs) > 0, "bf16 asked and native, yet the output equals fp32's: bf16 did not run"
    else:
        assert max(diffs) == 0
    listing = shelfready("models", "list", "--precision", "bf16")
    assert ("u2netp" in listing) and (("bf16" if native else "no native bf16") in listing)


# ---------------------------------------------------------------- models build-int8


def test_models_build_int8_makes_a_remover_that_clean_runs(tmp_path, monkeypatch):
    """`shelfready models build-int8 PHOTOS` (into a model folder of its own here, never the
    user's): an int8 QDQ u2netp calibrated on those photos, with its checksum record, which
    `clean --model u2netp-int8` then runs; its cut-outs track u2netp's."""
    import onnx

    from removers import models, segment

    home = tmp_path / "home"
    (home / "models" / "u2netp").mkdir(parents=True)
    weights = models.verify("u2netp")
    (home / "models" / "u2netp" / weights.name).symlink_to(weights)
    monkeypatch.setenv(models.HOME_ENV, str(home))
    calibration = copy_samples(tmp_path / "calibration", ["dress", "shoes"])
    output = shelfready("models", "build-int8", calibration)
    built = home / "models" / segment.INT8 / f"{segment.INT8}.onnx"
    assert output.strip() == f"ok  {segment.INT8}: {built} (calibrated on 2 photos)"
    meta = json.loads(built.with_name(built.name + ".json").read_text())
    assert meta["calibration"] == ["dress.jpg", "shoes.jpg"] and meta["size"] == built.stat().st_size
    ops = {node.op_type for node in onnx.load(str(built)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # int8 QDQ, not a copy of the fp32 graph

    src = copy_samples(tmp_path / "in", ["t-shirt"])
    for model in ("u2netp", segment.INT8):
        out = tmp_path / model
        shelfready("clean", src, out, "--model", model, "--runtime", "onnxruntime", "--size", "512",
                   "--workers", "1", "--quiet")
        row = json.loads((out / "summary.json").read_text())["photos"][0]
        assert row["model"] == model and row["status"] in ("cleaned", "needs_review"), row
    # the int8 remover's mask of the photo tracks u2netp's (a broken build gave IoU ~0.45)
    from mask_helpers import mask_iou

    from photos.io import load_image
    from removers.config import RuntimeConfig

    image = load_image(src / "t-shirt.jpg")
    rt = RuntimeConfig(runtime="onnxruntime")
    iou = mask_iou(segment.predict_alpha(image, "u2netp", rt), segment.predict_alpha(image, segment.INT8, rt))
    assert iou >= 0.7, iou


# ---------------------------------------------------------------- Ray: --shards, --from-parquet, --ray-actor-cpus


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for this module's Ray commands (a command reuses a Ray its process
    already joined), started as a command starts its own: one Ray start instead of three."""
    import ray

    from engines.cluster import LOCAL_SYSTEM_CONFIG

    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _system_config=LOCAL_SYSTEM_CONFIG)
    yield ray
    ray.shutdown()


def _pool_sizes(monkeypatch, module) -> list[tuple[float, int]]:
    """(actor_cpus asked, actors in the pool) of each Ray job ``module`` sizes (a spy on pool_size)."""
    calls: list[tuple[float, int]] = []
    real = module.pool_size

    def spy(cfg, ray, units, gpus=False):
        size = real(cfg, ray, units, gpus)
        calls.append((cfg.actor_cpus, size))
        return size

    monkeypatch.setattr(module, "pool_size", spy)
    return calls


@pytest.mark.ray
def test_catalog_shards_then_from_parquet_with_the_embedder_named(tmp_path, local_ray):
    """`shelfready catalog build shop/ --out cat/ --engine ray --shards shards/` writes its Parquet
    shards where --shards says; `shelfready catalog build --from-parquet shards/ --out cat2/
    --embedder cnn:efficientnet_lite0` on those shards alone (no sidecar, as if made elsewhere)
    builds the same catalog: same items, a photo finds itself at score 1."""
    from search import Catalog

    shop = copy_samples(tmp_path / "shop", ["dress", "hat", "shoes", "skirt"])
    shards = tmp_path / "where-the-shards-go"
    cat = tmp_path / "cat"
    output = shelfready("catalog", "build", shop, "--out", cat, "--engine", "ray", "--shards", shards,
                        "--embedder", EMBEDDER, "--index", "flat", "--quiet")
    assert "added 4, already present 0, failed 0" in output
    assert list(shards.glob("*.parquet")) and not (tmp_path / "cat-shards").exists()
    (shards / "shelfready-shards.json").unlink()  # Parquet only, as shards made by another tool
    res = CliRunner().invoke(cli, ["catalog", "build", "--from-parquet", str(shards), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "give --embedder" in res.output
    cat2 = tmp_path / "cat2"
    output = shelfready("catalog", "build", "--from-parquet", shards, "--out", cat2, "--embedder", EMBEDDER)
    assert "added 4, already present 0, failed 0" in output and EMBEDDER in output
    with Catalog.open(cat) as a, Catalog.open(cat2) as b:
        assert b.embedder_name == EMBEDDER and b.dim == 1280
        assert ([(i.id, i.sku, i.label, i.content_hash) for i in b.items()]
                == [(i.id, i.sku, i.label, i.content_hash) for i in a.items()])
    hit = json.loads(shelfready("search", cat2, shop / "skirt.jpg", "-k", "1", "--json"))[0]
    assert hit["sku"] == "skirt" and hit["score"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.ray
def test_clean_ray_actor_cpus_packs_more_actors(tmp_path, monkeypatch, sample_paths, local_ray):
    """`shelfready clean photos/ ready/ --engine ray --workers 2 --ray-actor-cpus 0.5`: a local Ray
    of 2 CPUs holds 4 actors of half a CPU (2 at the default 1 CPU); every photo is cleaned
    once (equality with the local engine: tests/test_scale_cluster.py)."""
    from scale_helpers import exactly_once, photos

    from engines import ray_engine

    sizes = _pool_sizes(monkeypatch, ray_engine)
    src = photos(sample_paths, tmp_path / "in", 4)
    shelfready("clean", src, tmp_path / "ray", "--engine", "ray", "--workers", "2", "--ray-actor-cpus", "0.5",
               "--size", "256", "--quiet")
    assert sizes == [(0.5, 4)]
    names = sorted(p.name for p in src.iterdir())
    exactly_once(tmp_path / "ray", names)
    assert all(Image.open(tmp_path / "ray" / n).size == (256, 256) for n in names)
