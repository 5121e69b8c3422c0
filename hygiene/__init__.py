"""Cleanup stage: product photo in -> marketplace-ready photo out."""
from .config import PRESETS, BatchConfig, CheckConfig, CleanConfig, LoadLimits, OutputConfig
from .pipeline import CleanResult, check, clean

__all__ = [
    "clean", "check", "CleanConfig", "CleanResult", "CheckConfig", "LoadLimits",
    "OutputConfig", "BatchConfig", "PRESETS",
]
