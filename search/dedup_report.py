"""A DedupResult -> duplicates.json, duplicates.csv, remove.txt (with a keep rule) and index.html.

Only these files in the output folder are written (atomically); the photos are never touched.
The HTML page shows each group side by side in the style of the evaluation report
(search/report.py: its CSS and thumbnails, embedded, so the page works offline).
"""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from .dedup import DedupResult, keeper, to_remove

CSV_FIELDS = ("group", "path", "kind", "score", "matched", "width", "height", "size_bytes", "sharpness", "keep")
HTML_GROUPS_MAX = 200  # groups drawn on the page (all are in the JSON and CSV)


def rows(result: DedupResult, keep: str | None = None) -> list[dict]:
    """One row per photo in a group: its strongest link (kind, score, the photo it matches)."""
    out = []
    for g in result.groups:
        kept = keeper(result, g, keep) if keep else None
        for i in g.members:
            p, link = result.photos[i], result.best_link(g, i)
            other = link.b if link.a == i else link.a
            out.append({"group": g.id, "path": p.path, "kind": link.kind, "score": link.score,
                        "matched": result.photos[other].path, "width": p.width, "height": p.height,
                        "size_bytes": p.size_bytes, "sharpness": p.sharpness,
                        "keep": "" if kept is None else ("yes" if i == kept else "no")})
    return out


def to_json(result: DedupResult, keep: str | None = None) -> dict:
    def photo(i: int) -> str:
        return result.photos[i].path

    return {
        "settings": result.settings | {"keep": keep},
        "photos_read": len(result.photos),
        "errors": [{"path": p, "error": e} for p, e in result.errors],
        "groups": [{"group": g.id,
                    "keep": photo(keeper(result, g, keep)) if keep else None,
                    "photos": [photo(i) for i in g.members],
                    "pairs": [{"a": photo(p.a), "b": photo(p.b), "kind": p.kind, "score": p.score}
                              for p in g.pairs]}
                   for g in result.groups],
    }


def _csv(table: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(table)
    return buf.getvalue()


def render_html(result: DedupResult, root: Path, keep: str | None = None) -> str:
    from .report import CSS, RENDER_CHECK, thumbnail

    e = html.escape
    by_group: dict[int, list[dict]] = {}
    for r in rows(result, keep):
        by_group.setdefault(r["group"], []).append(r)
    parts = [f"<h1>Duplicate photos</h1><p class=small>{len(result.photos)} photos read, "
             f"{len(result.groups)} groups of duplicates, {len(result.errors)} unreadable. Kinds: "
             f"{e(', '.join(result.settings.get('kinds', [])))}. Nothing was moved or deleted"
             + (f"; remove.txt lists what keeping the <b>{e(keep)}</b> of each group would remove." if keep else ".")
             + "</p>"]
    for gid, members in list(by_group.items())[:HTML_GROUPS_MAX]:
        cells = []
        for r in members:
            mark = {"yes": " <b>keep</b>", "no": " remove"}.get(r["keep"], "")
            cells.append(f"<figure><img src='{thumbnail(root / r['path'])}' alt='{e(r['path'])}'>"
                         f"<figcaption>{e(r['path'])}<br>{r['width']}x{r['height']}, {e(r['kind'])} "
                         f"{r['score']:.3f}{mark}</figcaption></figure>")
        parts.append(f"<h2>Group {gid}</h2><div class=row>{''.join(cells)}</div>")
    if len(by_group) > HTML_GROUPS_MAX:
        parts.append(f"<p>{len(by_group) - HTML_GROUPS_MAX} more groups in duplicates.csv.</p>")
    if result.errors:
        items = "".join(f"<li>{e(p)}: {e(msg)}</li>" for p, msg in result.errors)
        parts.append(f"<h2>Unreadable</h2><ul>{items}</ul>")
    style = CSS + "figure{display:inline-block;margin:4px;vertical-align:top;max-width:190px}"
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Duplicate photos</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}{RENDER_CHECK}</body></html>")


def write_outputs(result: DedupResult, out_dir: Path, root: Path, keep: str | None = None) -> dict[str, Path]:
    """Write the output files into out_dir; ``root`` is the folder the photos' paths are relative to."""
    from photos.io import write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "json": write_text_atomic(out_dir / "duplicates.json", json.dumps(to_json(result, keep), indent=2)),
        "csv": write_text_atomic(out_dir / "duplicates.csv", _csv(rows(result, keep))),
    }
    if keep:
        listing = to_remove(result, keep)
        written["remove"] = write_text_atomic(out_dir / "remove.txt", "".join(f"{p}\n" for p in listing))
    written["html"] = write_text_atomic(out_dir / "index.html", render_html(result, Path(root), keep))
    return written
