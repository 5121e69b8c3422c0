"""Grocery store photos -> 81 iconic product images: raw vs cleaned queries.

    python -m bench.retrieval_grocery [--split val|train] [--limit N] [--workers 2]

Query = a smartphone photo from a store (Klasson et al. GroceryStoreDataset),
catalog = the 81 iconic images on white (raw; they are already clean), relevant
= same fine class. Variants raw/raw and clean/raw, exact search, full ranking.
The train split has 2,640 photos; use --limit (seeded subset) to keep it short.
Writes a report folder (index.html, report.json, per_photo.csv) and prints a table.
``--variants`` and ``--view``/``--view-fill`` as in bench/retrieval_clothing.py
(e.g. ``--variants clean/raw,clean:blur/raw,fused:blur/raw``).
"""
from __future__ import annotations

from bench._common import finish, parser, run


def main() -> None:
    p = parser(__doc__.splitlines()[0], "retrieval-grocery")
    p.add_argument("--split", choices=["val", "train"], default="val")
    args = p.parse_args()
    if args.out.name == "retrieval-grocery":
        args.out = args.out.with_name(f"retrieval-grocery-{args.split}")
    from search import datasets

    queries, catalog = datasets.grocery_store(args.split, root=args.data, limit=args.limit, seed=args.seed)
    subset = f", seeded subset of {len(queries)}" if args.limit else ""
    ev, index, vs = run(args, queries, catalog, f"Grocery {args.split}{subset}: store photo -> iconic image",
                        clean_catalog=False)
    finish(ev, index, vs, ["R@1", "R@5", "R@10", "MRR"])


if __name__ == "__main__":
    main()
