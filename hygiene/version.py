"""The code version in every settings key: a hash of the sources that shape a finished photo's
pixels, so an upgrade redoes the outputs the old code made.

The pixels are shaped in three rooms: photos/ (decoding, colour, encoding), removers/ (the
masks) and hygiene/ (the cleanup steps). Modules that decide which photos run or where bytes go
(photos/keys.py, photos/store.py) and this file are left out.

``SAME_PIXELS`` maps a code version to an older one whose outputs it reproduces byte for byte,
so outputs, manifests and caches made by the older code stay valid: the house move of
2026-12 changed where modules live, not what they compute (tests/test_outputs_unchanged.py
compares the outputs with hashes committed before the move).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

_ROOMS = ("photos", "removers", "hygiene")
_NOT_PIXELS = frozenset({"photos/keys.py", "photos/store.py", "hygiene/version.py"})

SAME_PIXELS: dict[str, str] = {
    # the house move (2026-12): modules moved, no pixel changed; since then the marketplace rules
    # of issue 27 (checks only) and runtime.settings_fields folded into one function: no pixel changed
    "fb2758a322ae": "7f899a9292b8",
}


def source_hash() -> str:
    """Hash of the pixel-shaping sources as they are (12 hex digits)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for room in _ROOMS:
        for path in sorted((root / room).glob("*.py")):
            rel = f"{room}/{path.name}"
            if rel not in _NOT_PIXELS:
                h.update(rel.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


@lru_cache(maxsize=1)
def code_version() -> str:
    """The settings keys' code version: ``source_hash()``, or the older version it is known to
    reproduce (``SAME_PIXELS``)."""
    own = source_hash()
    return SAME_PIXELS.get(own, own)
