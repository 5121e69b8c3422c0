"""Labelled image sets for evaluation: (path, label) lists from folders, CSVs and the dev datasets.

An item is relevant to a query when their labels are equal. Loaders only list
files; pixels are read later (photos.io), so listing 3,000 photos is instant.
"""
from __future__ import annotations

import csv
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from photos import store

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff", ".gif")


@dataclass(frozen=True)
class LabelledImage:
    path: Path | str  # a str: an object-store URI (photos.store)
    label: str
    sku: str = ""  # catalog item id; the file stem when not given

    def __post_init__(self) -> None:
        if not str(self.label):
            raise ValueError(f"empty label for {self.path}")
        if not self.sku:
            object.__setattr__(self, "sku", Path(self.path).stem)


def default_data_root() -> Path:
    """$SHELFREADY_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("SHELFREADY_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _list_uri(root: str) -> list[str]:
    try:
        entries = store.list_files(root)
    except store.StoreError as exc:
        raise ValueError(str(exc)) from None
    found = []
    for e in entries:
        rel = store.relative(e.uri, root)
        if Path(rel).suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in rel.split("/")):
            found.append(e.uri)
    return found


def list_images(root: Path | str) -> list[Path] | list[str]:
    """Image files under root (recursive, sorted, hidden files skipped); under a URI, their URIs."""
    if store.is_uri(root):
        return _list_uri(root)
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"not a folder: {root}")
    return [p for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(root).parts)]


def stem_label(path: Path) -> str:
    """Label of a file named after its product: 'shoes-2.jpg' -> 'shoes', 'hat.jpg' -> 'hat'."""
    return re.sub(r"[-_ ]\d+$", "", Path(path).stem) or Path(path).stem


def from_folders(root: Path) -> list[LabelledImage]:
    """Label = name of the first-level sub-folder: ROOT/<label>/**/<image>."""
    uri = store.is_uri(root)
    root = root if uri else Path(root)
    items, loose = [], []
    for p in list_images(root):
        parts = store.relative(p, root).split("/") if uri else p.relative_to(root).parts
        if len(parts) < 2:
            loose.append(parts[-1])
        else:
            items.append(LabelledImage(p, parts[0]))
    if loose:
        raise ValueError(f"{len(loose)} image(s) directly in {root} have no label folder "
                         f"(e.g. {loose[0]}); put each under ROOT/<label>/")
    if not items:
        raise ValueError(f"no images found under {root}")
    return items


def from_stems(paths: Sequence[Path]) -> list[LabelledImage]:
    """Label from the file name (see stem_label); sku = the full stem."""
    return [LabelledImage(p if store.is_uri(p) else Path(p), stem_label(p)) for p in paths]


def from_csv(csv_path: Path, base: Path | None = None) -> list[LabelledImage]:
    """A CSV with a header holding ``path`` and ``label`` (optional ``sku``) columns.

    Relative paths are resolved against ``base`` (default: the CSV's folder).
    """
    csv_path = Path(csv_path)
    base = base if store.is_uri(base) else Path(base) if base is not None else csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        if "path" not in fields or "label" not in fields:
            raise ValueError(f"{csv_path}: needs a header with 'path' and 'label' columns, got {fields}")
        items = []
        for line_no, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("path") or not row.get("label"):
                raise ValueError(f"{csv_path}:{line_no}: empty path or label")
            path = store.location(row["path"])
            if not store.is_uri(path) and not path.is_absolute():
                path = store.join(base, row["path"]) if store.is_uri(base) else base / path
            items.append(LabelledImage(path, row["label"], row.get("sku", "")))
    if not items:
        raise ValueError(f"{csv_path}: no rows")
    return items


def subset(items: Sequence[LabelledImage], limit: int | None, seed: int = 0) -> list[LabelledImage]:
    """A seeded random subset of ``limit`` items, kept in their original order."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def grocery_store(split: str = "val", root: Path | None = None, limit: int | None = None,
                  seed: int = 0) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Klasson et al. GroceryStoreDataset: (queries, catalog).

    Queries = store photos of ``split`` ("val" 296 / "train" 2,640), catalog =
    the 81 iconic product images; label = fine class name (one per fine id).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    ds = Path(root or default_data_root()) / "grocery_store" / "dataset"
    names: dict[int, str] = {}
    catalog = []
    with (ds / "classes.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if not row or not row[1].strip().isdigit():
                continue  # header
            name, fine_id, iconic = row[0].strip(), int(row[1]), row[4].strip().lstrip("/")
            names[fine_id] = name
            catalog.append(LabelledImage(ds / iconic, name, sku=name))
    if len(set(names.values())) != len(names):
        raise ValueError(f"{ds / 'classes.csv'}: class names are not unique")
    queries = []
    for line in (ds / f"{split}.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rel, fine_id, _coarse = (part.strip() for part in line.split(","))
        queries.append(LabelledImage(ds / rel, names[int(fine_id)]))
    return subset(queries, limit, seed), catalog


def clothing_small(root: Path | None = None, limit: int | None = None,
                   seed: int = 0) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """clothing-dataset-small: (queries = validation photos, catalog = train photos); label = class."""
    base = Path(root or default_data_root()) / "clothing_small"
    return subset(from_folders(base / "validation"), limit, seed), from_folders(base / "train")
