"""`shelfready demo`: the README's first command, on the shipped sample photos."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from hygiene.batch import BatchJob, run_batch
from hygiene.config import CleanConfig


@click.command()
@click.argument("samples", type=click.Path(exists=True, file_okay=False, path_type=Path), default="sample_images")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path), default="out/demo")
def demo(samples, out_dir):
    """Clean the sample photos and print where the results and the summary are.

    Example: shelfready demo sample_images out/demo
    """
    job = BatchJob(in_dir=samples, out_dir=out_dir / "cleaned", clean=CleanConfig())
    summary = run_batch(job)
    c = summary.counts()
    click.echo(f"cleaned {c['cleaned']} of {c['total']} photos ({c['needs_review']} need review, "
               f"{c['failed']} failed) in {c['seconds']} s")
    click.echo(f"cleaned photos: {job.out_dir}")
    click.echo(f"summary:        {job.out_dir / job.batch.summary_csv}")
    sys.exit(0 if summary.ok else 1)
