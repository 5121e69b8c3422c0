"""`shelfready clean` and `shelfready check`."""
from __future__ import annotations

import dataclasses
import json
import signal
import sys
from pathlib import Path

import click

from engines.batch import run_batch
from engines.config import BatchConfig
from engines.job import BatchError, BatchJob
from photos.keys import utf8_text

from .options import Location, clean_options, device_option, engine_options, onnx_device, output_options


@click.command()
@click.argument("in_dir", type=Location(exists=True, file_okay=False))
@click.argument("out_dir", type=Location(file_okay=False))
@clean_options
@output_options
@click.option("--workers", type=click.IntRange(0, 64), default=BatchConfig().workers, show_default=True,
              help="Worker processes (0 = one per core).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@engine_options
@device_option
def clean(in_dir, out_dir, clean_config, output_config, workers, quiet, engine, ray_config, device):
    """Clean every photo under IN_DIR into OUT_DIR (tree mirrored, originals untouched).

    Re-running skips photos already done with the same bytes and settings.
    Exit code 1 when any photo failed.

    IN_DIR and OUT_DIR may be object-store URIs (s3://bucket/prefix; credentials and
    endpoint from the AWS variables or profiles); OUT inside IN is then refused.

    With --engine ray the same per-photo step runs in Ray actors (IN and OUT must be
    the same paths on every node, e.g. shared storage, or URIs); which node cleaned each
    photo is in OUT/.shelfready-nodes.jsonl.

    Example: shelfready clean photos/ ready/ --preset amazon --format jpg
    """
    from engines import EngineError

    if device != "cpu":
        runtime = dataclasses.replace(clean_config.runtime, device=onnx_device(device))
        clean_config = dataclasses.replace(clean_config, runtime=runtime)
    job = BatchJob(in_dir=in_dir, out_dir=out_dir, clean=clean_config, output=output_config,
                   batch=BatchConfig(workers=workers))
    try:
        if engine == "ray":
            from engines.ray_engine import run_batch_ray

            summary = run_batch_ray(job, ray_config, progress=not quiet)
        else:
            summary = run_batch(job, progress=not quiet)
    except (BatchError, EngineError) as exc:
        raise click.ClickException(str(exc)) from None
    c = summary.counts()
    click.echo(f"{c['total']} photos: {c['cleaned']} cleaned, {c['needs_review']} need review, "
               f"{c['failed']} failed, {c['skipped']} already done ({c['seconds']} s)")
    if summary.interrupted:
        click.echo(f"stopped by {signal.Signals(summary.interrupted).name}: {c['not_run']} photos not run; "
                   "run the same command again to resume", err=True)
    click.echo(f"results: {utf8_text(str(out_dir))}  summary: {utf8_text(str(job.out_file(job.batch.summary_json)))}, "
               f"{utf8_text(str(job.out_file(job.batch.summary_csv)))}")
    sys.exit(128 + summary.interrupted if summary.interrupted else 0 if summary.ok else 1)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@clean_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def check(paths, clean_config, as_json):
    """Readiness checks of photos as they are (white background, fill, size, sharpness, centring).

    Exit code 1 when any photo is not ready or cannot be read.

    Example: shelfready check ready/dress.jpg --preset amazon
    """
    from hygiene import check as check_image
    from photos.io import ImageLoadError, load_image

    results, all_ok = [], True
    for path in paths:
        try:
            report = check_image(load_image(path), clean_config)
            results.append({"path": str(path), **report})
            all_ok &= report["ready"]
        except ImageLoadError as exc:
            results.append({"path": str(path), "error": str(exc)})
            all_ok = False
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                click.echo(f"{r['path']}: error: {r['error']}")
                continue
            click.echo(f"{r['path']}: {'READY' if r['ready'] else 'NOT READY'} ({r['preset']}, {r['width']}x{r['height']})")
            for name, c in r["checks"].items():
                value = "-" if c["value"] is None else c["value"]
                notes = [c["finding"]] if c.get("finding") else []
                if c.get("product_text"):
                    notes.append(f"product text: {len(c['product_text'])} region(s), allowed")
                click.echo(f"  {'ok  ' if c['passed'] else 'FAIL'} {name:<17} {value}  (limit {c['limit']})"
                           + "".join(f"  {n}" for n in notes))
    sys.exit(0 if all_ok else 1)
