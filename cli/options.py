"""Shared click options: one definition per setting, defaults read from hygiene.config."""
from __future__ import annotations

import functools

import click

from hygiene.config import DEFAULT_PRESET, PRECISIONS, PRESETS, RUNTIMES, CleanConfig, OutputConfig, RuntimeConfig

_CLEAN = CleanConfig()
_OUT = OutputConfig()
_RT = RuntimeConfig()


def runtime_flags(func, default: str | None = "config"):
    """--runtime --precision as plain kwargs (``runtime``, ``precision``).

    ``default=None`` leaves them None when not given (serve: the environment may set them)."""
    rt = _RT.runtime if default else None
    pr = _RT.precision if default else None
    func = click.option("--precision", type=click.Choice(PRECISIONS), default=pr, show_default=bool(default),
                        help="Model precision; bf16 only where the CPU has it natively "
                             "(`shelfready models list` shows what auto picks here).")(func)
    return click.option("--runtime", type=click.Choice(RUNTIMES), default=rt, show_default=bool(default),
                        help="Model engine: onnxruntime (torch for the embedder) or openvino; "
                             "auto picks by this machine's measurements.")(func)


def runtime_options(func):
    """--runtime --precision -> `runtime_config` kwarg (a RuntimeConfig)."""

    @runtime_flags
    @functools.wraps(func)
    def wrapper(*args, runtime, precision, **kwargs):
        kwargs["runtime_config"] = RuntimeConfig(runtime=runtime, precision=precision)
        return func(*args, **kwargs)

    return wrapper


def clean_options(func):
    """--preset --model --fill --size --transparent --max-upscale --runtime --precision
    -> `clean_config` kwarg (``clean_config.runtime`` holds the runtime choice)."""

    @click.option("--preset", type=click.Choice(sorted(PRESETS)), default=DEFAULT_PRESET, show_default=True,
                  help="Marketplace rules: output size, fill and minimum size.")
    @click.option("--model", default=_CLEAN.model, show_default=True,
                  help="Background remover (any rembg model name; u2netp works offline).")
    @click.option("--fill", type=click.FloatRange(0.1, 1.0), default=None,
                  help="Share of the canvas the product's longer side fills [preset's].")
    @click.option("--size", type=click.IntRange(64, 10_000), default=None,
                  help="Side of the square output in px [preset's].")
    @click.option("--transparent", is_flag=True, help="Keep a transparent PNG instead of white.")
    @click.option("--max-upscale", type=click.FloatRange(1.0, 16.0), default=_CLEAN.max_upscale,
                  show_default=True, help="Never enlarge the product more than this (flag instead).")
    @runtime_flags
    @functools.wraps(func)
    def wrapper(*args, preset, model, fill, size, transparent, max_upscale, runtime, precision, **kwargs):
        kwargs["clean_config"] = CleanConfig(preset=preset, model=model, fill=fill, size=size,
                                             transparent=transparent, max_upscale=max_upscale,
                                             runtime=RuntimeConfig(runtime=runtime, precision=precision))
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
