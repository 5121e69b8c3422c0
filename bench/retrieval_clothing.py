"""Clothing photos -> catalog of other clothing photos: raw vs cleaned, queries and catalog.

    python -m bench.retrieval_clothing [--limit N] [--catalog-limit N] [--workers 2]

Queries = clothing-dataset-small validation photos (341), catalog = the 800
train photos, relevant = same class (10 classes). Variants raw/raw, clean/raw,
raw/clean and clean/clean; exact search over the full catalog, so P@10 and mAP
are over the full ranking. Prints P@1/P@10/mAP overall and by class.

Views (what the embedder sees of a cleaned photo; search/views.py) compare in one
run as variants, composed from the cached masks without a model run, e.g.

    python -m bench.retrieval_clothing --workers 2 --variants \
        clean/clean,clean:grey/clean:grey,clean:blur/clean:blur,clean:white@0.95/clean:white@0.95,fused:blur/fused:blur

or ``--view blur --view-fill 0.75`` to change what plain ``clean``/``fused`` show.
"""
from __future__ import annotations

from bench._common import finish, parser, run

VARIANTS = ["raw/raw", "clean/raw", "raw/clean", "clean/clean"]


def main() -> None:
    p = parser(__doc__.splitlines()[0], "retrieval-clothing")
    p.add_argument("--catalog-limit", type=int, default=None, help="seeded random subset of the catalog")
    args = p.parse_args()
    from search import datasets

    queries, catalog = datasets.clothing_small(root=args.data, limit=args.limit, seed=args.seed)
    catalog = datasets.subset(catalog, args.catalog_limit, args.seed)
    sizes = f"{len(queries)} validation queries, {len(catalog)} train photos as catalog"
    ev, index, vs = run(args, queries, catalog, f"Clothing: {sizes}", clean_catalog=True, variants=VARIANTS)
    finish(ev, index, vs, ["P@1", "P@10", "mAP", "R@1", "MRR"])
    print("\nby class (P@1 / P@10 / mAP):")
    print("| class | n | " + " | ".join(ev.variants) + " |")
    print("|---|---|" + "---|" * len(ev.variants))
    for label, base in ev.by_class["raw/raw"].items():
        cells = [" / ".join(f"{ev.by_class[v][label][m]:.2f}" for m in ("P@1", "P@10", "mAP")) for v in ev.variants]
        print(f"| {label} | {base['n']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
