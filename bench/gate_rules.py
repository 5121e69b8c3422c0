"""The gate's rules as the calibration benches search them: the grid of limits, and which
photos a set of limits passes (calibrate_gate.py on retrieval, gate_labelled.py on labelled masks)."""
from __future__ import annotations

import numpy as np

GRID = {
    "undecided_max": [0.05, 0.1, 0.15, 0.2, 0.3, 1.0],
    "border_touch_max": [0.02, 0.05, 0.1, 0.2, 0.3, 1.0],
    "fg_share_min": [0.0, 0.02, 0.05, 0.1],
    "fg_share_max": [0.4, 0.6, 0.8, 1.0],
    "objects_max": [1, 2, 3, 99],
}


def gate_pass(sigs: list[dict], rules: dict) -> np.ndarray:
    ok = np.ones(len(sigs), bool)
    for key, limit in rules.items():
        sig, kind = key.rsplit("_", 1)
        vals = np.array([s[sig] for s in sigs], dtype=float)
        ok &= (vals <= limit) if kind == "max" else (vals >= limit)
    return ok
