"""Shared click options: one definition per setting, defaults read from hygiene.config."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from hygiene.config import DEFAULT_PRESET, PRESETS, CheckConfig, CleanConfig, RuleConfig
from photos.config import OutputConfig
from removers.config import CASCADE, CUDA_REMOVER_BATCH, PRECISIONS, RUNTIMES, RuntimeConfig

_CLEAN = CleanConfig()
_OUT = OutputConfig()
_RT = RuntimeConfig()


class Location(click.ParamType):
    """A local folder (checked as ``click.Path(**path_args)`` checks it, given as a ``Path``) or an
    object-store URI such as ``s3://bucket/prefix`` (given as a str, checked when it is used)."""

    name = "path"

    def __init__(self, **path_args) -> None:
        self.local = click.Path(path_type=Path, **path_args)

    def convert(self, value, param, ctx):
        from photos.store import is_uri, location

        if isinstance(value, (str, Path)) and is_uri(str(value)):
            value = location(str(value))
            if is_uri(value):
                return value
        return self.local.convert(value, param, ctx)


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
    """--preset --model --fallback-model --fill --size --transparent --max-upscale --remover-batch --runtime
    --precision -> `clean_config` kwarg (``clean_config.runtime`` holds the runtime choice)."""

    @click.option("--preset", type=click.Choice(sorted(PRESETS)), default=DEFAULT_PRESET, show_default=True,
                  help="Marketplace rules: output size, fill and minimum size.")
    @click.option("--model", default=_CLEAN.model, show_default=True,
                  help=f"Background remover: u2netp (offline default), {_CLEAN.cascade[1]} (opt-in, AGPL-3.0 "
                       f"weights), {CASCADE} ({_CLEAN.cascade[0]} first, {_CLEAN.cascade[1]} only for photos "
                       "the gate does not trust), or any rembg model name.")
    @click.option("--fallback-model", default=_CLEAN.fallback_model, metavar="NAME[,NAME]",
                  help="Second remover for the photos whose cut-out the gate does not trust; several, "
                       "comma-separated, are tried in turn until one's cut-out passes "
                       f"[none; {_CLEAN.cascade[1]} with --model {CASCADE}].")
    @click.option("--fill", type=click.FloatRange(0.1, 1.0), default=None,
                  help="Share of the canvas the product's longer side fills [preset's].")
    @click.option("--size", type=click.IntRange(64, 10_000), default=None,
                  help="Side of the square output in px [preset's].")
    @click.option("--transparent", is_flag=True, help="Keep a transparent PNG instead of white.")
    @click.option("--max-upscale", type=click.FloatRange(1.0, 16.0), default=_CLEAN.max_upscale,
                  show_default=True, help="Never enlarge the product more than this (flag instead).")
    @click.option("--remover-batch", type=click.IntRange(0, 256), default=_RT.remover_batch, show_default=True,
                  help="Photos per remover call on onnxruntime (0 = the device's: 1 on cpu, "
                       f"{CUDA_REMOVER_BATCH} on cuda); more needs more GPU memory.")
    @click.option("--text-overlay", is_flag=True,
                  help="Also check for text overlays (\"FREE SHIPPING\") left on the white outside the product; "
                       "needs `shelfready models fetch ppocr-det`.")
    @runtime_flags
    @functools.wraps(func)
    def wrapper(*args, preset, model, fallback_model, fill, size, transparent, max_upscale, remover_batch, runtime,
                precision, text_overlay, **kwargs):
        if text_overlay:  # the detector's weights checked before any photo: one line naming the fetch
            from removers.errors import ModelError
            from removers.models import verify
            from removers.text_det import NAME

            try:
                verify(NAME)
            except ModelError as exc:
                raise click.ClickException(str(exc)) from None
        checks = CheckConfig(rules=RuleConfig(text_overlay=text_overlay))
        kwargs["clean_config"] = CleanConfig(preset=preset, model=model, fallback_model=fallback_model,
                                             fill=fill, size=size, transparent=transparent,
                                             max_upscale=max_upscale, checks=checks,
                                             runtime=RuntimeConfig(runtime=runtime, precision=precision,
                                                                   remover_batch=remover_batch))
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


def engine_options(func):
    """--engine --ray-address --ray-actor-cpus -> `engine` and `ray_config` kwargs.

    RAY_ADDRESS (the environment variable Ray's own tools use) is read here, at the
    edge; with neither it nor --ray-address, the ray engine starts a local Ray for
    the command and stops it afterwards."""
    from engines.config import RayConfig

    ray_defaults = RayConfig()

    @click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                  help="local: this machine's process pool. ray: Ray Data actors (pip install shelfready[ray]).")
    @click.option("--ray-address", envvar="RAY_ADDRESS", default=None, show_envvar=True,
                  help="Ray cluster to run on (host:port or ray://host:port) [RAY_ADDRESS; none: a local Ray].")
    @click.option("--ray-actor-cpus", type=click.FloatRange(0.05, 256), default=ray_defaults.actor_cpus,
                  show_default=True, help="CPUs each Ray actor (one model) reserves; fractions pack more per node.")
    @functools.wraps(func)
    def wrapper(*args, engine, ray_address, ray_actor_cpus, **kwargs):
        kwargs["engine"] = engine
        kwargs["ray_config"] = RayConfig(address=ray_address or None, actor_cpus=ray_actor_cpus)
        return func(*args, **kwargs)

    return wrapper


def device_option(func):
    """--device auto|cpu|cuda -> `device` kwarg (the choice; each command resolves "auto")."""
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                        help="Where models run: cuda needs an NVIDIA GPU and pip install shelfready[gpu]; "
                             "auto = cuda when onnxruntime/torch see a GPU.")(func)


def onnx_device(choice: str) -> str:
    """cpu or cuda for the remover: ``auto`` is cuda when onnxruntime has its CUDA provider;
    cuda without it is a one-line error before any photo is read."""
    if choice == "cpu":
        return choice
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if choice == "cuda" and not has_cuda:
        raise click.ClickException("--device cuda: this onnxruntime has no CUDA provider; "
                                   "pip install shelfready[gpu] on a machine with an NVIDIA GPU")
    return "cuda" if has_cuda else "cpu"
