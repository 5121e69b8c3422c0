"""`shelfready demo`: the README's first command, on the shipped sample photos."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from hygiene.batch import BatchJob, run_batch
from hygiene.config import CleanConfig


@click.command()
@click.argument("samples", type=click.Path(exists=True, file_okay=False, path_type=Path), default="sample_images")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path), default="out/demo")
def demo(samples, out_dir):
    """Clean the sample photos, build a catalog of them, and report whether cleanup helps search.

    1. cleans SAMPLES into OUT_DIR/cleaned (summary.csv beside the photos);
    2. builds a catalog (OUT_DIR/catalog) of the cleaned photos as product listings;
    3. re-shoots each sample synthetically (mirror, crop, tilt, light) and searches
       the catalog with the raw re-shot vs the cleaned re-shot: OUT_DIR/report/index.html.

    Example: shelfready demo sample_images out/demo
    """
    from search import Catalog, DEFAULT_EMBEDDER, create_embedder
    from search.datasets import LabelledImage
    from search.evaluate import EvalConfig, evaluate
    from search.report import verdict_sentence, write_report
    from search.reshoot import make_reshoots
    from hygiene.io import load_image

    config = CleanConfig()
    job = BatchJob(in_dir=samples, out_dir=out_dir / "cleaned", clean=config)
    summary = run_batch(job)
    c = summary.counts()
    click.echo(f"cleaned {c['cleaned']} of {c['total']} photos ({c['needs_review']} need review, "
               f"{c['failed']} failed) in {c['seconds']} s -> {job.out_dir}")

    listings = [LabelledImage(job.out_dir / r["output"], Path(r["rel"]).stem, Path(r["rel"]).stem)
                for r in summary.rows if r.get("output")]
    embedder = create_embedder(DEFAULT_EMBEDDER)
    shutil.rmtree(out_dir / "catalog", ignore_errors=True)
    catalog = Catalog.create(out_dir / "catalog", embedder.name, embedder.dim)
    catalog.add_images([load_image(x.path) for x in listings],
                       [{"sku": x.sku, "label": x.label, "path": str(x.path)} for x in listings], embedder)
    click.echo(f"catalog of {len(catalog)} listings -> {out_dir / 'catalog'}")

    queries = make_reshoots([samples / r["rel"] for r in summary.rows if r.get("output")], out_dir / "reshoots")
    ev = evaluate(queries, listings, embedder, config, variants=["raw/raw", "clean/raw"],
                  config=EvalConfig(cache_dir=out_dir / "cache"))
    index = write_report(ev, out_dir / "report", title="Demo: synthetic re-shots of the sample photos")
    click.echo(verdict_sentence(ev, "clean/raw"))
    click.echo(f"summary: {job.out_dir / job.batch.summary_csv}")
    click.echo(f"report:  {index}")
    sys.exit(0 if summary.ok else 1)
