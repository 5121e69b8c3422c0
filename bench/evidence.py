"""The evidence table: each scenario's MRR difference with its CI, verdict, under each embedder, on a dev set.

    python -m bench.evidence --set clothing --workers 2
    python -m bench.evidence --set grocery-val --workers 2
    python -m bench.evidence --set grocery-train --workers 2

One evaluation per embedder (default: cnn:efficientnet_lite0+flip, then
cnn:efficientnet_lite2+flip) over the same photos with every variant a scenario
needs (raw/raw, raw/clean, clean/raw, clean/clean), so each scenario's row is
read from the same run (search.scenarios). The set's own scenario gives the
report's verdict; the reasons (search/reasons.py) are measured under the first
embedder (``--reasons-all`` for every one). Prints a markdown table row per
(scenario, embedder), the agreement of the embedders per scenario (robust only
when every CI excludes 0 on the same side), and the reasons; writes one report
folder per embedder and evidence.json under --out.

Sets: ``demo`` = demo_data/, the 40 shopper photos vs the 40 listings `make demo` uses
(``--data`` another folder of queries/ and listings/); ``clothing`` = clothing-dataset-small, 341 validation photos vs the 800
train photos (crowd-sourced both: shop search and normalised index fit it);
``grocery-val`` / ``grocery-train`` = GroceryStoreDataset store photos vs the 81
iconic studio images (catalog match and normalised index fit it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = {  # set -> (scenarios that fit it, first = the report's)
    "demo": ("shop-search", "normalised-index"),
    "clothing": ("shop-search", "normalised-index"),
    "grocery-val": ("catalog-match", "normalised-index"),
    "grocery-train": ("catalog-match", "normalised-index"),
}
VARIANTS = ["raw/raw", "raw/clean", "clean/raw", "clean/clean"]


def load(name: str, data, limit, seed):
    from search import datasets

    if name == "demo":  # the shipped demo photos (what `make demo` runs)
        folder = Path(data) if data else ROOT / "demo_data"
        return datasets.from_folders(folder / "queries"), datasets.from_folders(folder / "listings")
    if name == "clothing":
        return datasets.clothing_small(root=data, limit=limit, seed=seed)
    return datasets.grocery_store(name.split("-")[1], root=data, limit=limit, seed=seed)


def reuse(cache_dir: Path, key: str) -> None:
    """Make the batch engine take the cleaned images under ``key`` as done, whatever hygiene code
    version made them (the same photo bytes, the same clean settings: the folder is keyed by them)."""
    import engines.plan
    import hygiene.version

    info = json.loads((Path(cache_dir) / "clean" / key / "info.json").read_text())
    made_by = info["hygiene_code"]
    finished = engines.plan._finished

    def same_photo_done(prev, task, settings, masks=False, exists=None):  # any hygiene code version
        return finished(prev, task, prev.get("settings") if prev else settings, masks, exists)

    engines.plan._finished = same_photo_done
    print(f"reusing the cleaned images of cache {key}: hygiene code {made_by}, git {info['git_commit'][:7]}, "
          f"{info['created']} (current hygiene code {hygiene.version.code_version()})", flush=True)


def main() -> None:
    from search.config import DEFAULT_EMBEDDER, SECOND_EMBEDDER

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", dest="set_name", choices=SETS, required=True)
    p.add_argument("--embedders", default=f"{DEFAULT_EMBEDDER},{SECOND_EMBEDDER}")
    p.add_argument("--workers", type=int, default=1, help="cleaning processes")
    p.add_argument("--limit", type=int, default=None, help="seeded random subset of the query photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None, help="shared data folder [../shared/data]")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/shelfready-cache"))
    p.add_argument("--cache-key", default=None, help="pin cleaned images to an existing cache key")
    p.add_argument("--reuse-cleaned", action="store_true",
                   help="with --cache-key: take the cleaned images in that cache as they are, even when the "
                        "hygiene code changed since they were made (its info.json names the commit that made "
                        "them; the report says it); without it a changed hygiene code cleans again")
    p.add_argument("--reasons-all", action="store_true", help="measure the reasons under every embedder")
    p.add_argument("--out", type=Path, default=None, help="[out/bench/evidence-SET]")
    args = p.parse_args()
    out = args.out or ROOT / "out" / "bench" / f"evidence-{args.set_name}"

    from hygiene.config import CleanConfig
    from search import create_embedder, scenarios
    from search.evaluate import EvalConfig, evaluate
    from search.opinions import agreement, opinion
    from search.report import write_report

    if args.reuse_cleaned:
        if not args.cache_key:
            p.error("--reuse-cleaned needs --cache-key")
        reuse(args.cache_dir, args.cache_key)
    queries, catalog = load(args.set_name, args.data, args.limit, args.seed)
    fits = SETS[args.set_name]
    command = "python -m bench.evidence " + " ".join(sys.argv[1:])
    evs = []
    for i, name in enumerate(n.strip() for n in args.embedders.split(",")):
        t = time.perf_counter()
        cfg = EvalConfig(seed=args.seed, workers=args.workers, cache_dir=args.cache_dir, cache_key=args.cache_key)
        if i and not args.reasons_all:
            cfg = dataclasses.replace(cfg, reasons=dataclasses.replace(cfg.reasons, enabled=False))
        ev = evaluate(queries, catalog, create_embedder(name), CleanConfig(), variants=VARIANTS, config=cfg,
                      scenario=fits[0])
        ev.settings["command"] = command
        ev.settings["seconds"] = round(time.perf_counter() - t, 1)
        cw = ev.settings.get("cleaned_with", {})
        ev.settings["note"] = (f"Cleaned with hygiene code {cw.get('hygiene_code', '?')} (git "
                               f"{cw.get('git_commit', '?')[:7]}, {cw.get('created', '?')}). Command: {command}")
        write_report(ev, out / name.replace(":", "_").replace("+", "_"),
                     title=f"{args.set_name}: {len(queries)} queries vs {len(catalog)} catalog items ({name})")
        evs.append(ev)
        print(f"{name}: {ev.settings['n_queries']} queries, {ev.settings['n_catalog']} catalog items, "
              f"{ev.settings['seconds']} s", flush=True)

    rows = []
    print("\n| set | scenario | embedder | MRR raw/raw | MRR difference [95% CI] | Wilcoxon p | verdict |")
    print("|---|---|---|---|---|---|---|")
    for sc in scenarios.SCENARIOS.values():
        ops = []
        for ev in evs:
            c = ev.comparisons[sc.variant]
            d = c["diff"]["MRR"]
            op = {**opinion(dataclasses.replace(ev, headline=sc.variant)), "scenario": sc.name,
                  "fits_set": sc.name in fits}
            ops.append(op)
            rows.append(op)
            print(f"| {args.set_name} | {sc.name}{'' if sc.name in fits else ' (does not fit this set)'} | "
                  f"{op['embedder']} | {op['mrr_raw']:.3f} | {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | "
                  f"{c['wilcoxon_p_rr']:.2g} | {c['verdict']} |")
        for op in ops:
            op["agreement"] = agreement(ops)
        print(f"|  | {sc.name}: across embedders |  |  |  |  | {agreement(ops)} |")
    for ev in evs:
        r = ev.reasons
        if not r or "error" in r:
            continue
        print(f"\nreasons under {ev.settings['embedder']} ({r['n_queries']} queries, {r['n_catalog']} catalog):")
        for c, vals in r["conditions"].items():
            print(f"  {c:<14} R@1 {vals['R@1']['mean']:.3f} [{vals['R@1']['low']:.3f}, {vals['R@1']['high']:.3f}]"
                  f"  MRR {vals['MRR']['mean']:.3f} [{vals['MRR']['low']:.3f}, {vals['MRR']['high']:.3f}]")
        print(f"  chance         R@1 {r['chance']['R@1']:.3f}  MRR {r['chance']['MRR']:.3f}")
        for line in r["sentences"]:
            print(f"  - {line}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "evidence.json").write_text(json.dumps(
        {"set": args.set_name, "command": command, "rows": rows,
         "reasons": {ev.settings["embedder"]: ev.reasons for ev in evs}}, indent=2, default=str))
    print(f"\nreports and evidence.json: {out}")


if __name__ == "__main__":
    main()
