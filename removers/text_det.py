"""The PP-OCRv4 text detector (a DB network: a probability map of "text here"), its pre- and
post-processing, and its session (onnxruntime, fp32: no bf16 without an accuracy guard).

Pre-processing as PaddleOCR's: the photo (BGR) resized so its longer side is at most ``side``
px, each side a multiple of 32, normalised with the ImageNet mean and deviation. Post-
processing: the map thresholded at ``threshold``, one region per contour, kept when its mean
probability reaches ``box_threshold``, its rotated box grown by the DB "unclip" distance
(area * ``unclip`` / perimeter), in the photo's pixels. Nothing runs at import time.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from . import models
from .config import RuntimeConfig

NAME = "ppocr-det"
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
_SESSIONS: dict = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class TextRegion:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (the rotated box's bounds), photo pixels
    quad: tuple[tuple[int, int], ...]  # the rotated box's four corners
    angle: float  # degrees of the box's long side from the horizontal
    score: float  # mean probability inside the region


def session(runtime: RuntimeConfig = RuntimeConfig()):
    """One onnxruntime session per process and thread settings; a missing or corrupt weight file
    raises ``ModelError`` naming ``shelfready models fetch ppocr-det``."""
    key = (runtime.threads, runtime.spin, str(models.weight_path(NAME)))
    with _LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            path = models.verify(NAME)
            import onnxruntime as ort

            from .runtime import ort_options

            sess = _SESSIONS[key] = ort.InferenceSession(str(path), ort_options(runtime.threads, runtime.spin),
                                                         providers=["CPUExecutionProvider"])
    return sess


def preprocess(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float, float]:
    """(1, 3, H, W) float32 input and the x, y scale factors back to ``rgb``'s pixels."""
    h, w = rgb.shape[:2]
    f = min(1.0, side / max(h, w))
    nh, nw = max(32, int(round(h * f / 32)) * 32), max(32, int(round(w * f / 32)) * 32)
    img = cv2.resize(rgb[..., ::-1], (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    img = (img - _MEAN) / _STD
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None]), w / nw, h / nh


def regions(prob: np.ndarray, sx: float, sy: float, threshold: float, box_threshold: float,
            unclip: float, min_side: float = 3.0) -> list[TextRegion]:
    """Text regions of a probability map (H, W), scaled by ``sx``, ``sy`` into the photo."""
    binary = cv2.dilate((prob > threshold).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        if len(contour) < 4:
            continue
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
        if min(rw, rh) < min_side:
            continue
        fill = np.zeros_like(binary)
        cv2.drawContours(fill, [contour], -1, 1, -1)
        score = float(prob[fill > 0].mean())
        if score < box_threshold:
            continue
        grow = rw * rh * unclip / (2 * (rw + rh))
        quad = cv2.boxPoints(((cx, cy), (rw + 2 * grow, rh + 2 * grow), angle))
        quad[:, 0] = np.clip(quad[:, 0] * sx, 0, prob.shape[1] * sx)
        quad[:, 1] = np.clip(quad[:, 1] * sy, 0, prob.shape[0] * sy)
        long_angle = angle if rw >= rh else angle - 90.0
        x0, y0 = quad.min(axis=0)
        x1, y1 = quad.max(axis=0)
        out.append(TextRegion((int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))),
                              tuple((int(round(x)), int(round(y))) for x, y in quad),
                              round(float(((long_angle + 90) % 180) - 90), 1), round(score, 3)))
    return sorted(out, key=lambda r: (r.box[1], r.box[0]))


def detect(rgb: np.ndarray, side: int = 960, threshold: float = 0.3, box_threshold: float = 0.6,
           unclip: float = 1.5, runtime: RuntimeConfig = RuntimeConfig()) -> list[TextRegion]:
    """Text regions in an RGB photo (uint8, H x W x 3)."""
    sess = session(runtime)
    x, sx, sy = preprocess(rgb, side)
    prob = sess.run(None, {sess.get_inputs()[0].name: x})[0][0, 0]
    return regions(prob, sx, sy, threshold, box_threshold, unclip)
