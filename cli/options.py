"""Shared click options: one definition per setting, defaults read from hygiene.config."""
from __future__ import annotations

import functools

import click

from hygiene.config import CASCADE, DEFAULT_PRESET, PRESETS, CleanConfig, OutputConfig

_CLEAN = CleanConfig()
_OUT = OutputConfig()


def clean_options(func):
    """--preset --model --fallback-model --fill --size --transparent --max-upscale -> `clean_config` kwarg."""

    @click.option("--preset", type=click.Choice(sorted(PRESETS)), default=DEFAULT_PRESET, show_default=True,
                  help="Marketplace rules: output size, fill and minimum size.")
    @click.option("--model", default=_CLEAN.model, show_default=True,
                  help=f"Background remover: u2netp (offline default), {_CLEAN.cascade[1]} (opt-in, AGPL-3.0 "
                       f"weights), {CASCADE} ({_CLEAN.cascade[0]} first, {_CLEAN.cascade[1]} only for photos "
                       "the gate does not trust), or any rembg model name.")
    @click.option("--fallback-model", default=_CLEAN.fallback_model, metavar="NAME",
                  help="Second remover for the photos whose cut-out the gate does not trust "
                       f"[none; {_CLEAN.cascade[1]} with --model {CASCADE}].")
    @click.option("--fill", type=click.FloatRange(0.1, 1.0), default=None,
                  help="Share of the canvas the product's longer side fills [preset's].")
    @click.option("--size", type=click.IntRange(64, 10_000), default=None,
                  help="Side of the square output in px [preset's].")
    @click.option("--transparent", is_flag=True, help="Keep a transparent PNG instead of white.")
    @click.option("--max-upscale", type=click.FloatRange(1.0, 16.0), default=_CLEAN.max_upscale,
                  show_default=True, help="Never enlarge the product more than this (flag instead).")
    @functools.wraps(func)
    def wrapper(*args, preset, model, fallback_model, fill, size, transparent, max_upscale, **kwargs):
        kwargs["clean_config"] = CleanConfig(preset=preset, model=model, fallback_model=fallback_model,
                                             fill=fill, size=size, transparent=transparent,
                                             max_upscale=max_upscale)
        return func(*args, **kwargs)

    return wrapper


def output_options(func):
    """--format -> `output_config` kwarg."""

    @click.option("--format", "fmt", type=click.Choice(["jpg", "png", "webp"]), default=_OUT.format,
                  show_default=True, help="Output file format (png when --transparent).")
    @functools.wraps(func)
    def wrapper(*args, fmt, **kwargs):
        kwargs["output_config"] = OutputConfig(format=fmt)
        return func(*args, **kwargs)

    return wrapper
