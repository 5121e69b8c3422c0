"""Every default of reading and writing photo files lives here and nowhere else."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadLimits:
    """Guards applied before any pixel is decoded."""

    max_bytes: int = 50 * 1024 * 1024  # 50 MiB per file
    max_pixels: int = 60_000_000  # decompression-bomb guard (width * height)
    min_side: int = 16  # smaller images carry no product to clean


@dataclass(frozen=True)
class OutputConfig:
    """How cleaned images are written."""

    format: str = "jpg"  # jpg | png | webp (png forced when transparent)
    jpeg_quality: int = 92
    webp_quality: int = 90
    webp_lossless: bool = False  # exact pixels (the evaluation cache); webp_quality is then unused
    # also write the remover's mask of the source photo (grey PNG, ``mask_path(output)``): the
    # evaluation cache composes its embedding views from it without running the model again
    save_mask: bool = False

    def __post_init__(self) -> None:
        if self.format not in ("jpg", "png", "webp"):
            raise ValueError(f"format must be jpg, png or webp, got {self.format!r}")

    def for_transparency(self, transparent: bool) -> "OutputConfig":
        """The config a transparent result is written with: jpg has no alpha, so png; png/webp stay."""
        return dataclasses.replace(self, format="png") if transparent and self.format == "jpg" else self
