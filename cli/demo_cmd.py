"""`shelfready demo`: the README's first command, on the shipped demo photos."""
from __future__ import annotations

import shutil
from pathlib import Path

import click

from engines.config import BatchConfig
from hygiene.config import CleanConfig
from removers.runtime import given_cores

SCENARIO = "shop-search"  # shoppers search with their own raw photos; the shop cleans its listings or not


@click.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path), default="demo_data")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path), default="out/demo")
@click.option("--workers", type=click.IntRange(0, 64), default=BatchConfig().workers, show_default=True,
              help="Cleaning processes (0 = one per core).")
@click.option("--variants", default=None,
              help="More query/catalog variants in the same run, e.g. clean/raw,clean/clean (they answer "
                   "other questions; the verdict stays the shop's).")
def demo(data, out_dir, workers, variants):
    """Does cleanup help a visual search find the right product? Measured on real photos.

    DATA holds listings/<class>/*.jpg (a shop's product photos) and
    queries/<class>/*.jpg (shoppers' photos of the same kinds of product); the
    shipped demo_data/ has 80 CC0 clothing photos, 10 classes. The demo

    1. cleans every listing and query photo (white background, square, centred);
    2. builds a catalog of the cleaned listings (OUT_DIR/catalog; try
       `shelfready search OUT_DIR/catalog PHOTO`);
    3. asks the shop's question (scenario shop-search): do shoppers' own, raw
       photos find the right listing more often when the listings are cleaned?
       It reports R@k, P@k, mAP and MRR with bootstrap CIs and a paired test,
       whatever the verdict, and why (background shortcut, context reliance,
       framing, per class): OUT_DIR/report/index.html.

    Example: shelfready demo demo_data out/demo
    """
    from photos.io import load_image
    from search import DEFAULT_EMBEDDER, Catalog, create_embedder
    from search.datasets import from_folders
    from search.evaluate import EvalConfig, evaluate
    from search.report import verdict_sentence, write_report

    try:
        listings, queries = from_folders(data / "listings"), from_folders(data / "queries")
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"{data} needs listings/<class>/ and queries/<class>/ photo folders: {exc}")
    click.echo(f"{len(listings)} listings and {len(queries)} shopper photos "
               f"({len({x.label for x in listings})} classes) from {data}")
    embedder = create_embedder(DEFAULT_EMBEDDER)
    config = EvalConfig(workers=workers or given_cores(), cache_dir=out_dir / "cache")
    extra = [v for v in variants.split(",") if v.strip()] if variants else None
    try:
        ev = evaluate(queries, listings, embedder, CleanConfig(), variants=extra, config=config, scenario=SCENARIO)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    status = [r["status"] for r in ev.photos + ev.catalog]
    click.echo(f"cleaned {len(status)} photos: {status.count('cleaned')} whitened, {status.count('needs_review')} "
               f"kept their background (mask not trusted: needs_review), {len(ev.excluded)} left out")

    usable = [(c, r) for c, r in zip(listings, ev.catalog) if r["used"] and r["cleaned_path"]]
    shutil.rmtree(out_dir / "catalog", ignore_errors=True)
    catalog = Catalog.create(out_dir / "catalog", embedder.name, embedder.dim)
    catalog.add_images([load_image(r["cleaned_path"]) for _, r in usable],
                       [{"sku": c.sku, "label": c.label, "path": str(c.path)} for c, _ in usable], embedder)
    click.echo(f"catalog of {len(catalog)} cleaned listings -> {out_dir / 'catalog'}")

    index = write_report(ev, out_dir / "report", title="Demo: shoppers' photos vs a shop's listings, raw and cleaned")
    click.echo(verdict_sentence(ev, ev.headline))
    why = ev.reasons or {}
    if "error" in why:
        click.echo(f"Why: not measured ({why['error']})")
    for i, line in enumerate(why.get("sentences", [])):
        click.echo(("Why: " if i == 0 else "  - ") + line)
    for v in ev.variants[1:]:
        if v != ev.headline:
            click.echo(f"(another question) {verdict_sentence(ev, v)}")
    click.echo(f"report: {index}")
