"""Which two-piece masks does the gate's pair test take as one product?

    python -m bench.gate_pairs [--model u2netp] [--sets clothing,grocery_val,grocery_train,labelled]
                               [--train-limit 400] [--out pairs.json]

For every photo of the sets (clothing-dataset-small validation + the 800 train
photos; grocery val; a seeded ``--train-limit`` subset of grocery train, 0 =
all; GrabCut + COCO_MVal) whose ``--model`` mask (``bench.segmentation.cached_alpha``)
has exactly two counted pieces, it prints the area ratio of the two, their
outline distance (``hygiene.confidence.outline_distance``), whether the pair
test takes them as one product, and the verdict of the gate the product ships
for that remover with its reasons. Labels: the garment class, the grocery
folder name, or the labelled photo's name; look at the photos the test takes
before trusting it (the README names the ones it took on the dev sets).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from bench.segmentation import cached_alpha
from hygiene.confidence import assess, outline_distance, pieces
from hygiene.config import CleanConfig


def photo_sets(names: list[str], train_limit: int) -> dict[str, list[tuple[Path, str]]]:
    from bench.segmentation import coco_items, grabcut_items
    from search import datasets as d

    out: dict[str, list[tuple[Path, str]]] = {}
    for name in names:
        if name == "clothing":
            q, c = d.clothing_small()
            out[name] = [(x.path, x.label) for x in q + c]
        elif name == "grocery_val":
            q, _ = d.grocery_store("val")
            out[name] = [(x.path, x.path.parent.name) for x in q]
        elif name == "grocery_train":
            q, _ = d.grocery_store("train", limit=train_limit or None, seed=0)
            out[name] = [(x.path, x.path.parent.name) for x in q]
        elif name == "labelled":
            out[name] = [(img, img.stem) for img, _ in grabcut_items() + coco_items()]
        else:
            raise SystemExit(f"unknown set {name!r} (clothing, grocery_val, grocery_train, labelled)")
    return out


def two_piece_rows(model: str, sets: dict[str, list[tuple[Path, str]]]) -> list[dict]:
    gate = CleanConfig().gate_for(model)
    rows = []
    for set_name, items in sets.items():
        for path, label in items:
            alpha = cached_alpha(path, model)
            verdict = assess(np.zeros((*alpha.shape, 3), np.uint8), alpha, None, gate)  # reads the mask only
            if verdict.signals["blobs"] != 2:
                continue
            labels, areas, counted = pieces(alpha >= gate.solid, gate)
            a, b = int(counted[0]), int(counted[1])
            rows.append({"set": set_name, "label": label, "path": str(path),
                         "area_ratio": round(min(areas[a], areas[b]) / max(areas[a], areas[b]), 3),
                         "outline_distance": round(outline_distance(labels, a, b), 3),
                         "pair": verdict.signals["objects"] == 1,  # the gate's own pair decision
                         "gate_passed": verdict.passed, "reasons": verdict.reasons})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="u2netp")
    ap.add_argument("--sets", default="clothing,grocery_val,grocery_train,labelled")
    ap.add_argument("--train-limit", type=int, default=400, help="grocery train photos (seeded subset); 0 = all")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = two_piece_rows(args.model, photo_sets(args.sets.split(","), args.train_limit))
    print("| set | label | area ratio | outline distance | pair | gate | photo |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (not r["pair"], r["set"], r["outline_distance"])):
        gate = "passed" if r["gate_passed"] else "refused: " + "; ".join(x.split(":")[0] for x in r["reasons"])
        print(f"| {r['set']} | {r['label']} | {r['area_ratio']} | {r['outline_distance']} | "
              f"{'yes' if r['pair'] else 'no'} | {gate} | {Path(r['path']).name} |")
    by_set = Counter((r["set"], r["pair"]) for r in rows)
    for s in dict.fromkeys(r["set"] for r in rows):
        print(f"{s}: {by_set[(s, True)] + by_set[(s, False)]} two-piece masks, {by_set[(s, True)]} taken as a pair",
              file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
