"""`shelfready dedup`: groups of duplicate photos in a folder tree (nothing moved or deleted)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from photos.keys import utf8_text
from search.config import DEDUP_KINDS, DEFAULT_DEDUP

from .options import runtime_options


def _kinds(ctx, param, value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    bad = [k for k in kinds if k not in DEDUP_KINDS]
    if bad or not kinds:
        raise click.BadParameter(f"{', '.join(bad) or 'none given'}; choose from {', '.join(DEDUP_KINDS)}")
    return kinds


@click.command()
@click.argument("in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for duplicates.json, duplicates.csv, index.html (and remove.txt with --keep).")
@click.option("--kinds", default=",".join(DEFAULT_DEDUP.kinds), show_default=True, callback=_kinds,
              metavar="KIND[,KIND]", help="Which duplicates to report: exact (same bytes or pixels), near-exact "
                                          "(resized, re-encoded, mirrored: perceptual hashes), same-product "
                                          "(embedding similarity).")
@click.option("--keep", type=click.Choice(["first", "largest", "sharpest"]), default=None,
              help="Write remove.txt: every photo of each group but the one this keeps (nothing is removed).")
@click.option("--embedder", default=DEFAULT_DEDUP.embedder, show_default=True,
              help="Embedder of the same-product kind.")
@click.option("--quiet", is_flag=True, help="No progress line.")
@runtime_options
def dedup(in_dir, out_dir, kinds, keep, embedder, quiet, runtime_config):
    """Find groups of duplicate photos under IN_DIR; report them in --out.

    Never moves, changes or deletes a photo. Exit code 1 when any photo could not be read
    (each is named on one line; the others are still compared).

    Example: shelfready dedup photos/ --out dups/ --keep largest
    """
    import dataclasses

    from engines.config import BatchConfig
    from engines.plan import find_images
    from search.dedup import find_duplicates
    from search.dedup_report import write_outputs
    from search.embedders import create_embedder

    cfg = dataclasses.replace(DEFAULT_DEDUP, kinds=kinds, embedder=embedder)
    paths = find_images(in_dir, BatchConfig(), exclude=out_dir)
    names = [Path(os.path.relpath(p, in_dir)).as_posix() for p in paths]
    model = create_embedder(embedder, runtime=runtime_config) if "same-product" in kinds and paths else None

    def progress(k: int) -> None:
        if not quiet and sys.stderr.isatty():
            click.echo(f"\r{k}/{len(paths)} photos read", nl=False, err=True)

    result = find_duplicates(paths, cfg, names=names, embedder=model, progress=progress)
    if not quiet and sys.stderr.isatty() and paths:
        click.echo(err=True)
    for path, error in result.errors:
        click.echo(utf8_text(f"{path}: {error}"), err=True)
    written = write_outputs(result, out_dir, in_dir, keep)
    counts = {k: sum(p.kind == k for g in result.groups for p in g.pairs) for k in kinds}
    in_groups = sum(len(g.members) for g in result.groups)
    click.echo(f"{len(result.photos)} photos read, {len(result.errors)} unreadable; {len(result.groups)} groups "
               f"of duplicates ({in_groups} photos); pairs: "
               + ", ".join(f"{k} {n}" for k, n in counts.items()))
    if keep:
        removed = sum(len(g.members) - 1 for g in result.groups)
        click.echo(f"{written['remove']}: {removed} photos a seller would remove (keeping the {keep}); "
                   "nothing was removed")
    click.echo(f"{written['html']}")
    sys.exit(1 if result.errors else 0)
