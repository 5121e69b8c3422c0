"""Catalog item records: their fields, the one rule for their text, and safe printing.

sku and label are free text typed by people or taken from file names, shown
later in terminals, HTML and JSON. They may hold any valid Unicode except
control characters: C0 (U+0000-U+001F: NUL, TAB, LF, CR, ESC ...), DEL (U+007F)
and C1 (U+0080-U+009F, e.g. the one-character CSI U+009B), which can rewrite a
terminal or forge lines in logs. Lone surrogates (what Python makes of a file
name that is not valid UTF-8) are refused too: they cannot be stored as UTF-8.
``check_text`` is the one place that rule lives; the catalog, the CLI and the
API all call it. Items written by older versions may still hold such
characters, so anything that prints item text goes through ``printable``.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

ITEM_FIELDS = ("sku", "label", "path", "content_hash")
TEXT_FIELDS = ("sku", "label")  # free text checked by check_text; paths and hashes are ours


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    sku: str | None
    label: str | None
    path: str | None


@dataclass(frozen=True)
class Item:
    id: int
    sku: str | None
    label: str | None
    path: str | None  # a relative path is relative to the catalog folder
    content_hash: str | None
    added_at: str


def _refused(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs")  # Cc = C0 + DEL + C1 exactly; Cs = surrogates


def printable(text: str | None) -> str:
    """``text`` with control characters and lone surrogates escaped (``\\x1b``, ``\\udcff``)."""
    if text is None:
        return "None"
    return "".join(ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   if _refused(ch) else ch for ch in text)


def check_text(field: str, value: Any) -> str | None:
    """``value`` as stored for ``field`` (None stays None); ValueError on a control character."""
    if value is None:
        return None
    text = str(value)
    for pos, ch in enumerate(text):
        if _refused(ch):
            what = "an invalid character (lone surrogate)" if unicodedata.category(ch) == "Cs" \
                else "a control character"
            raise ValueError(f"{field} contains {what} U+{ord(ch):04X} at position {pos}: "
                             f"'{printable(text)}'")
    return text


def item_row(item: Mapping[str, Any] | None) -> tuple:
    """The stored (sku, label, path, content_hash) of one item mapping (None: all empty)."""
    if item is None:
        return (None,) * len(ITEM_FIELDS)
    if not isinstance(item, Mapping):
        raise ValueError(f"items must be mappings with keys {ITEM_FIELDS}, got {type(item).__name__}")
    extra = set(item) - set(ITEM_FIELDS)
    if extra:
        raise ValueError(f"unknown item fields {sorted(extra)}; allowed: {', '.join(ITEM_FIELDS)}")
    return tuple(check_text(f, item.get(f)) if f in TEXT_FIELDS else _stored(f, item.get(f))
                 for f in ITEM_FIELDS)


def _stored(field: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    if any(unicodedata.category(ch) == "Cs" for ch in text):  # SQLite stores UTF-8 only
        raise ValueError(f"{field} is not valid UTF-8: '{printable(text)}'")
    return text
