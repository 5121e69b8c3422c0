"""The cleanup gate on labelled masks, per remover (``python -m bench.calibrate_gate --labelled``).

How many masks the gate passes on GrabCut and COCO_MVal and how many of those
are bad, for each remover's own masks, under the default gate, a gate fitted
for that remover, and the gate the product ships for it (``CleanConfig.gate_for``).
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.gate_rules import GRID, gate_pass
from bench.segmentation import cached_alpha
from hygiene.confidence import mask_signals
from hygiene.config import GateConfig

RULE_FIELDS = {"undecided_max": "max_undecided", "border_touch_max": "max_border_touch",
               "fg_share_min": "min_fg_share", "fg_share_max": "max_fg_share", "objects_max": "max_objects"}


def rules_of(gate: GateConfig) -> dict:
    """The grid's rules as a GateConfig states them."""
    return {k: getattr(gate, f) for k, f in RULE_FIELDS.items()}


def gate_of(rules: dict, base: GateConfig = GateConfig()) -> GateConfig:
    return replace(base, **{RULE_FIELDS[k]: v for k, v in rules.items()})


def labelled_rows(model: str, margin: float = 0.10) -> list[dict]:
    """Per labelled photo (GrabCut, COCO_MVal): the mask signals of ``model``'s alpha and its IoUs.

    ``iou`` is over the whole frame (GrabCut: the unlabelled band left out; COCO_MVal:
    against its one labelled object, so a mask that also cuts out other objects of the
    scene scores low: whitened, it would not show one product); ``box_iou`` is
    bench/segmentation.py's in-box score of COCO_MVal."""
    from bench.segmentation import coco_gt, coco_items, grabcut_gt, grabcut_items, iou

    rows = []
    for name, items in (("grabcut", grabcut_items()), ("coco", coco_items())):
        for img, gtp in items:
            alpha = cached_alpha(img, model)
            pred = alpha >= 128
            if name == "grabcut":
                fg, scored = grabcut_gt(gtp)
                frame_iou = box_iou = iou(pred, fg, scored)
            else:
                fg, boxed = coco_gt(gtp, margin)
                frame_iou, box_iou = iou(pred, fg, np.ones_like(fg)), iou(pred, fg, boxed)
            rows.append({"set": name, "image": img.name, "iou": round(frame_iou, 4),
                         "box_iou": round(box_iou, 4), **mask_signals(alpha, GateConfig())})
    return rows


def gate_precision(rows: list[dict], rules: dict, good_iou: float) -> dict:
    """How many masks the gate passes, and how many of those are bad (IoU < good_iou)."""
    ok = gate_pass(rows, rules)
    good = np.array([r["iou"] >= good_iou for r in rows])
    passed = int(ok.sum())
    return {"n": len(rows), "good": int(good.sum()), "passed": passed,
            "passed_good": int((ok & good).sum()), "passed_bad": int((ok & ~good).sum()),
            "precision": round(float((ok & good).sum() / passed), 3) if passed else None,
            "recall": round(float((ok & good).sum() / max(1, good.sum())), 3),
            "mean_iou_passed": round(float(np.mean([r["iou"] for r, o in zip(rows, ok) if o])), 4) if passed else None}


def fit_labelled(rows: list[dict], good_iou: float, min_precision: float) -> dict:
    """The rules passing the most good masks with precision >= min_precision (looser on ties)."""
    good = np.array([r["iou"] >= good_iou for r in rows])
    best, best_key = {}, (-1, -1.0)
    keys = list(GRID)
    for combo in itertools.product(*(GRID[k] for k in keys)):
        rules = dict(zip(keys, combo))
        ok = gate_pass(rows, rules)
        if not ok.any():
            continue
        prec = float((ok & good).sum() / ok.sum())
        key = (int((ok & good).sum()), prec)
        if prec >= min_precision and key > best_key:
            best, best_key = rules, key
    return best


def labelled_report(models: list[str], good_iou: float, reference: str, unlabelled: list[Path]) -> dict:
    """Each model's masks on the labelled sets under the default gate and under a gate fitted
    for that model: as many good masks passed as possible, at no lower precision than
    the default gate has on ``reference``'s masks. ``unlabelled``: photos (e.g. the
    ones the first remover of a cascade fails on) whose pass share is reported."""
    from hygiene.config import CleanConfig

    data = {m: labelled_rows(m) for m in models}
    default_rules = rules_of(GateConfig())
    ref = gate_precision(data[reference], default_rules, good_iou)
    out: dict = {"good_iou": good_iou, "reference": {"model": reference, "rules": default_rules, **ref},
                 "models": {}}
    for m in models:
        fitted = fit_labelled(data[m], good_iou, ref["precision"] or 0.0)
        shipped = rules_of(CleanConfig().gate_for(m))
        res = {"default_gate": gate_precision(data[m], default_rules, good_iou),
               "fitted_rules": fitted, "fitted_gate": gate_precision(data[m], fitted, good_iou),
               "shipped_rules": shipped, "shipped_gate": gate_precision(data[m], shipped, good_iou),
               "by_set": {}}
        for s in ("grabcut", "coco"):
            sub = [r for r in data[m] if r["set"] == s]
            res["by_set"][s] = {g: gate_precision(sub, rules, good_iou) for g, rules in
                                (("default", default_rules), ("fitted", fitted), ("shipped", shipped))}
        if unlabelled:
            sigs = [mask_signals(cached_alpha(p, m), GateConfig()) for p in unlabelled]
            res["unlabelled_pass_share"] = {g: round(float(gate_pass(sigs, rules).mean()), 3) for g, rules in
                                            (("default", default_rules), ("fitted", fitted), ("shipped", shipped))}
        out["models"][m] = res
    return out
