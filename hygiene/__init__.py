"""Cleanup steps: a product photo and its mask in -> a marketplace-ready photo out, and the readiness checks."""
from photos.config import LoadLimits, OutputConfig

from .config import PRESETS, CheckConfig, CleanConfig
from .pipeline import CleanResult, check, clean

__all__ = [
    "clean", "check", "CleanConfig", "CleanResult", "CheckConfig", "LoadLimits",
    "OutputConfig", "PRESETS",
]
