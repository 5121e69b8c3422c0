"""`shelfready catalog build|add`, `shelfready search`, `shelfready evaluate`.

Register in cli/main.py:
    cli.add_command(catalog_group, name="catalog")
    cli.add_command(search_cmd, name="search")
    cli.add_command(evaluate_cmd, name="evaluate")
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hygiene.config import CleanConfig
from photos.keys import one_line
from search.config import DEFAULT_EMBEDDER, DEFAULT_VIEW, INDEX_TYPES, VIEW_BACKGROUNDS
from search.embed_modes import EMBED_MODES
from search.scenarios import SCENARIO_NAMES

from .options import Location, clean_options, device_option, engine_options, onnx_device, runtime_options


def _labelled(images: Path, labels: Path | None, from_folders: bool):
    from search import datasets

    if labels and from_folders:
        raise click.UsageError("use --labels or --labels-from-folders, not both")
    try:
        if labels:
            return datasets.from_csv(labels, base=images)
        if from_folders:
            return datasets.from_folders(images)
        return datasets.from_stems(datasets.list_images(images))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _add(catalog, items, embedder) -> tuple[int, int, list[str]]:
    """Embed (the catalog's way: raw, clean or fused) and add items not already in it: (added, skipped, errors).

    Known photos (same content hash) are skipped before embedding; ``Catalog.insert``
    applies the same rule under the catalog's write lock, so a photo another process
    added meanwhile is not added twice either.
    """
    from photos.io import load_image
    from photos.keys import bytes_sha256
    from photos.store import is_uri, read_path
    from search.config import DEFAULT_EMBED
    from search.embed_modes import embed_images, settings_of
    from search.items import check_text, printable

    mode, clean_config, view = settings_of(catalog.embed)
    added, skipped, errors = 0, 0, []
    batch = DEFAULT_EMBED.batch_size
    for start in range(0, len(items), batch):
        images, rows = [], []
        for it in items[start:start + batch]:
            try:
                row = {"sku": check_text("sku", it.sku), "label": check_text("label", it.label)}
                data = read_path(it.path)  # a file or an object (s3://...), read once
                digest = bytes_sha256(data)
                if catalog.find_hash(digest):
                    skipped += 1
                    continue
                images.append(load_image(data))
                rows.append(dict(row, path=it.path if is_uri(it.path) else str(Path(it.path).resolve()),
                                 content_hash=digest))
            except (ValueError, OSError) as exc:
                errors.append(printable(f"{it.path}: {exc}"))
        if images:
            catalog.check_embedder(embedder.name, embedder.dim)
            try:
                vectors = embed_images(images, embedder, mode, clean_config, view)
            except ValueError as exc:  # e.g. the remover's weights are missing: one line for the batch
                raise click.ClickException(one_line(exc)) from None
            done = catalog.insert(vectors, rows)
            added += done.n_new
            skipped += len(done.new) - done.n_new
    return added, skipped, errors


def _adding(catalog, items, embedder) -> tuple[int, int, list[str]]:
    """``_add`` with the catalog's sharing errors as one-line CLI errors."""
    from search.catalog import CatalogBusy

    try:
        return _add(catalog, items, embedder)
    except CatalogBusy as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. a read-only catalog folder
        raise click.ClickException(one_line(exc)) from None


def _lock_timeout_option(func):
    from search.config import DEFAULT_STORE

    return click.option("--lock-timeout", type=click.FloatRange(min=0), default=DEFAULT_STORE.lock_timeout,
                        show_default=True,
                        help="Seconds to wait while another process writes to the catalog.")(func)


def _label_options(func):
    func = click.option("--labels-from-folders", is_flag=True,
                        help="Label = name of each image's first sub-folder under IMAGES.")(func)
    return click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="CSV with path,label[,sku] columns (paths relative to IMAGES). "
                             "Default: label from the file name ('shoes-2.jpg' -> shoes).")(func)


def _report_add(added: int, skipped: int, errors: list[str], catalog) -> None:
    for e in errors:
        click.echo(f"error: {e}", err=True)
    click.echo(f"added {added}, already present {skipped}, failed {len(errors)}; catalog {catalog.directory}: "
               f"{len(catalog)} items, {catalog.embedder_name}, {catalog.index_type} index")
    if errors:
        sys.exit(1)


@click.group()
def catalog_group():
    """Build and grow a searchable product catalog (FAISS index + item table)."""


@catalog_group.command("build")
@click.argument("images", required=False, type=Location(exists=True, file_okay=False))
@_label_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Catalog folder (local; IMAGES, --shards and --from-parquet may be s3:// URIs).")
@click.option("--embedder", default=DEFAULT_EMBEDDER, show_default=True,
              help="source:arch[/tag]; append +flip for a mirror-averaged embedding (twice the model work).")
@click.option("--index", "index_type", type=click.Choice(INDEX_TYPES), default="auto", show_default=True,
              help="FAISS index; auto picks by catalog size.")
@_lock_timeout_option
@runtime_options
@engine_options
@click.option("--shards", type=Location(file_okay=False),
              help="--engine ray: where the Parquet shards of embeddings go [OUT-shards].")
@click.option("--from-parquet", type=Location(exists=True, file_okay=False),
              help="Build from Parquet shards (id, sku, label, path, content_hash, vector) instead of IMAGES.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--embed", "embed_mode", type=click.Choice(EMBED_MODES), default="raw", show_default=True,
              help="Each item's vector: the photo as given, the cleaned photo, or fused (the normalised mean "
                   "of both). Recorded in the catalog: searches and additions embed the same way.")
@click.option("--clean-model", default=CleanConfig().model, show_default=True,
              help="Background remover for --embed clean/fused.")
@device_option
@click.pass_context
def build(ctx, images, labels, labels_from_folders, out, embedder, index_type, lock_timeout, runtime_config, engine,
          ray_config, shards, from_parquet, quiet, embed_mode, clean_model, device):
    """Embed every image under IMAGES into a new catalog at --out.

    With --engine ray the photos are embedded by Ray actors into Parquet shards
    and the index is built from them shard by shard; --from-parquet DIR builds
    from such shards made elsewhere.

    Example: shelfready catalog build products/ --labels-from-folders --out cat/
    """
    from engines import EngineError

    if (images is None) == (from_parquet is None):
        raise click.UsageError("give either IMAGES or --from-parquet DIR")
    if embed_mode != "raw" and (from_parquet is not None or engine == "ray"):
        raise click.UsageError(f"--embed {embed_mode} runs on the local engine only (not --engine ray or "
                               "--from-parquet)")
    if from_parquet is not None or engine == "ray":
        from search.shard_index import build_catalog_ray, build_from_parquet

        try:
            if from_parquet is not None:
                explicit = ctx.get_parameter_source("embedder") != click.core.ParameterSource.DEFAULT
                if (out / "catalog.json").exists():
                    raise EngineError(f"{out} already holds a catalog; use `shelfready catalog add`")
                done = build_from_parquet(from_parquet, out, embedder if explicit else None, index_type)
            else:
                items = _labelled(images, labels, labels_from_folders)
                done = build_catalog_ray(items, embedder, out, shards or out.with_name(out.name + "-shards"),
                                         index_type, ray_config, device=device, progress=not quiet)
        except (EngineError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        _report_add(done.added, done.skipped, done.errors, _open(out))
        return
    from search import Catalog, create_embedder
    from search.catalog import CatalogBusy
    from search.config import StoreConfig
    from search.embed_modes import embed_header

    items = _labelled(images, labels, labels_from_folders)
    emb = create_embedder(embedder, device=None if device == "auto" else device, runtime=runtime_config)
    try:
        clean_config = CleanConfig(model=clean_model, runtime=runtime_config)
        cat = Catalog.create(out, emb.name, emb.dim, index_type, store=StoreConfig(lock_timeout=lock_timeout),
                             embed=embed_header(embed_mode, clean_config))
    except FileExistsError as exc:
        raise click.ClickException(f"{exc}; use `shelfready catalog add`") from None
    except (CatalogBusy, OSError, ValueError) as exc:
        raise click.ClickException(one_line(exc)) from None
    _report_add(*_adding(cat, items, emb), cat)


@catalog_group.command("add")
@click.argument("catalog", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_label_options
@_lock_timeout_option
def add(catalog, images, labels, labels_from_folders, lock_timeout):
    """Add the images under IMAGES to CATALOG (photos already in it are skipped).

    Example: shelfready catalog add cat/ new-products/ --labels new.csv
    """
    from search import create_embedder

    cat = _open(catalog, lock_timeout)
    items = _labelled(images, labels, labels_from_folders)
    _report_add(*_adding(cat, items, create_embedder(cat.embedder_name)), cat)


def _open(directory: Path, lock_timeout: float | None = None):
    from search import Catalog
    from search.config import DEFAULT_STORE, StoreConfig

    store = DEFAULT_STORE if lock_timeout is None else StoreConfig(lock_timeout=lock_timeout)
    try:
        return Catalog.open(directory, store=store)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise click.ClickException(one_line(exc)) from None


@click.command("search")
@click.argument("catalog", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text", help="Search by a text description instead (CLIP embedders only).")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=5, show_default=True, help="Hits to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--query-embed", type=click.Choice(EMBED_MODES), default=None,
              help="Embed IMAGE raw, cleaned or fused [the catalog's own --embed].")
def search_cmd(catalog, image, text, k, as_json, query_embed):
    """The catalog items most similar to IMAGE (or to --text).

    Example: shelfready search cat/ photo.jpg -k 5
    """
    from photos.io import load_image
    from search import create_embedder
    from search.items import printable

    if (image is None) == (text is None):
        raise click.UsageError("give either IMAGE or --text")
    cat = _open(catalog)
    emb = create_embedder(cat.embedder_name)
    try:
        if text is not None:
            vec = emb.embed_text([text])
        else:
            from search.embed_modes import embed_images, settings_of

            mode, clean_config, view = settings_of(cat.embed)
            vec = embed_images([load_image(image)], emb, query_embed or mode, clean_config, view)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    hits = [h.__dict__ for h in cat.search(vec, k)[0]]
    if as_json:  # ASCII JSON: control characters of older items arrive escaped
        click.echo(json.dumps(hits, indent=2))
        return
    for rank, h in enumerate(hits, start=1):  # never print an item's control characters raw
        click.echo(f"{rank:>3}  {h['score']:.4f}  {printable(h['sku'])}  {printable(h['label'])}  "
                   f"{printable(h['path'])}")


@click.command("evaluate")
@click.option("--catalog", "catalog_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Catalog built with `shelfready catalog build` (its images are re-read).")
@click.option("--queries", type=Location(exists=True, file_okay=False),
              help="Query photos in DIR/<label>/... (label = sub-folder); DIR may be an s3:// URI "
                   "(its photos are copied into the cache folder once, by ETag).")
@click.option("--queries-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of path,label (paths relative to the CSV).")
@click.option("--scenario", type=click.Choice(SCENARIO_NAMES), default=None,
              help="The question asked: shop-search (shoppers' raw photos vs the listings, raw vs cleaned), "
                   "catalog-match (your photo, raw vs cleaned, vs the catalog as given), normalised-index "
                   "(every photo cleaned) [catalog-match; normalised-index with --clean-catalog].")
@click.option("--variants", default=None,
              help="More query/catalog variants in the same run, comma-separated, e.g. clean/clean,fused/fused.")
@click.option("--embedders", default=None,
              help="Comma-separated embedders that each answer the question, e.g. "
                   "cnn:efficientnet_lite0+flip,cnn:efficientnet_lite2+flip; the first writes the report "
                   "[the catalog's embedder].")
@click.option("--clean-catalog", is_flag=True, help="Without --scenario: the normalised-index scenario.")
@click.option("--reasons/--no-reasons", default=True, show_default=True,
              help="Measure why cleanup gains or loses (needs every catalog photo cleaned too: "
                   "--no-reasons for a large raw catalog).")
@clean_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--workers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Cleaning processes (0 = one per core this process is given).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where cleaned images and embeddings are cached [~/.cache/shelfready].")
@click.option("--view", type=click.Choice(VIEW_BACKGROUNDS), default=DEFAULT_VIEW.background, show_default=True,
              help="Background the embedder sees of a cleaned photo (grey, or the photo's own blurred); "
                   "the cleaned photos themselves stay white.")
@click.option("--view-fill", type=click.FloatRange(0.1, 1.0), default=None,
              help="Product share of the embedder's view of a cleaned photo [the preset's fill].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@engine_options
@device_option
def evaluate_cmd(catalog_dir, queries, queries_csv, scenario, variants, embedders, clean_catalog, reasons,
                 clean_config, out,
                 workers, cache_dir, view, view_fill, quiet, engine, ray_config, device):
    """Does cleanup make your photos easier to find? Answers one scenario's question on CATALOG.

    Writes OUT/index.html (the question, the verdict, why: background shortcut,
    context reliance, framing, per class; numbers with 95% CIs, plots, examples),
    OUT/report.json and OUT/per_photo.csv. With --embedders a,b each embedder
    answers too, and the verdict is called robust only when they agree.

    Example: shelfready evaluate --catalog cat/ --queries shots/ --scenario shop-search --out report/
    """
    import dataclasses

    from search import create_embedder, datasets
    from search.evaluate import EvalConfig, evaluate
    from search.opinions import combine, sentence
    from search.report import ci_level, verdict_sentence, write_report

    scenario = scenario or ("normalised-index" if clean_catalog else "catalog-match")
    extra = [v for v in variants.split(",") if v.strip()] if variants else None
    names = [n.strip() for n in embedders.split(",") if n.strip()] if embedders else []
    if (queries is None) == (queries_csv is None):
        raise click.UsageError("give either --queries DIR or --queries-csv CSV")
    if device != "cpu":  # before any photo is read: cuda without a GPU is one line
        clean_config = dataclasses.replace(clean_config, runtime=dataclasses.replace(
            clean_config.runtime, device=onnx_device(device)))
    from photos import store
    from search.photo_cache import default_cache_dir

    staging = Path(cache_dir or default_cache_dir()) / "staged"  # local copies of s3:// photos (photos.store)
    try:
        if store.is_uri(queries):
            queries = store.stage_prefix(queries, staging, datasets.IMAGE_EXTENSIONS)
        query_items = datasets.from_folders(queries) if queries else datasets.from_csv(queries_csv)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    cat = _open(catalog_dir)
    catalog_items = []
    for it in cat.items():
        if it.path and it.label:
            try:
                path = (store.stage_file(it.path, staging, it.content_hash or "") if store.is_uri(it.path)
                        else cat.resolve_path(it.path))
            except OSError as exc:
                raise click.ClickException(str(exc)) from None
            catalog_items.append(datasets.LabelledImage(path, it.label, it.sku or ""))
    from search.config import ReasonsConfig, ViewConfig
    from search.scenarios import variants_for

    cfg = EvalConfig(workers=workers, cache_dir=cache_dir,
                     view=ViewConfig(background=view, fill=view_fill, grey=DEFAULT_VIEW.grey,
                                     blur_sigma=DEFAULT_VIEW.blur_sigma),
                     reasons=dataclasses.replace(ReasonsConfig(), enabled=reasons))
    # the catalog is cleaned when the reasons or a variant's catalog side need it
    clean_listings = reasons or any(v.rsplit("/", 1)[-1] != "raw" for v in variants_for(scenario, extra))
    evs = []
    try:
        for name in names or [cat.embedder_name]:
            embedder = create_embedder(name, device=None if device == "auto" else device,
                                       runtime=clean_config.runtime)
            if engine == "ray":  # cleanup and embedding on Ray actors, into the cache; the scoring here
                from engines import EngineError
                from search.evaluate_ray import evaluate_on_ray

                ray_config = dataclasses.replace(ray_config, num_cpus=ray_config.num_cpus or workers)
                try:  # cleanup and embedding on Ray; the scenario is scored below
                    evaluate_on_ray(query_items, catalog_items, embedder, clean_config, clean_listings, cfg,
                                    ray_config, device=device, progress=not quiet)
                except EngineError as exc:
                    raise click.ClickException(str(exc)) from None
            evs.append(evaluate(query_items, catalog_items, embedder, clean_config, variants=extra, config=cfg,
                                progress=not quiet, scenario=scenario))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    ev = evs[0]
    combined = combine(evs) if len(evs) > 1 else None
    if combined:
        ev.opinions = combined["opinions"]
    index = write_report(ev, out)
    for v in [ev.headline] + [v for v in ev.variants[1:] if v != ev.headline]:
        click.echo(verdict_sentence(ev, v))
    for line in (ev.reasons or {}).get("sentences", [])[:1]:
        click.echo(f"Why: {line}")
    if combined:
        click.echo(sentence(combined, ci_level(ev)))
    click.echo(f"verdict: {ev.verdict}" + (f" ({combined['agreement']})" if combined else ""))
    click.echo(f"report: {index}")
