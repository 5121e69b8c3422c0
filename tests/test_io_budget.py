"""Decoding within a memory bound: load_image(fit_pixels=, max_decode_bytes=) on images the tests make.

Peak memory is measured in a fresh process (VmHWM), never timed.
"""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photos.colour as colour
from photos.colour import fit_size, shrink_to_fit
from photos.io import ImageTooLargeError, decode_bytes, load_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


def png16_rgba(width: int, height: int) -> bytes:
    """16-bit RGBA PNG: light grey with a blue box in the middle, opaque; written row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bg, fg = struct.pack(">4H", 60000, 60000, 60000, 65535), struct.pack(">4H", 9000, 20000, 40000, 65535)
    comp = zlib.compressobj(9)
    parts = []
    for y in range(height):
        x0, x1 = (width // 3, 2 * width // 3) if height // 4 <= y < 3 * height // 4 else (0, 0)
        parts.append(comp.compress(b"\x00" + bg * x0 + fg * (x1 - x0) + bg * (width - x1)))
    parts.append(comp.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def _big_jpeg(side: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.open(SAMPLES / "dress.jpg").convert("RGB").resize(side, Image.Resampling.BICUBIC).save(
        buf, "JPEG", quality=90)
    return buf.getvalue()


def _peak_mib(source: Path, **kwargs) -> dict:
    """Load in a fresh interpreter; report the result and the peak RSS growth of the load."""
    # VmHWM (peak RSS of this process image), not ru_maxrss, which a child inherits from its
    # parent's peak across fork + exec
    code = f"""
import json
from photos.io import load_image
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
data = open({str(source)!r}, "rb").read()
before = hwm()
im = load_image(data, **{kwargs!r})
after = hwm()
print(json.dumps({{"size": im.size, "mode": im.mode, "peak_mib": (after - before) / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, timeout=300)
    return json.loads(out.stdout)


def test_fit_size_keeps_aspect_and_bound():
    assert fit_size(7745, 7745, 25_000_000) == (5000, 5000)
    w, h = fit_size(6000, 4000, 1_000_000)
    assert w * h <= 1_000_000 and abs(w / h - 1.5) < 0.01 and w * h > 990_000
    assert fit_size(100, 50, 10_000) == (100, 50)


def test_big_16bit_png_is_shrunk_without_a_full_size_copy(tmp_path):
    path = tmp_path / "big16.png"
    path.write_bytes(png16_rgba(4000, 4000))  # 16 MP, 64 MiB once decoded (Pillow: 4 B/px)
    full = _peak_mib(path)
    small = _peak_mib(path, fit_pixels=1_000_000)
    assert full["size"] == [4000, 4000] and small["size"] == [1000, 1000] and small["mode"] == "RGB"
    # at most the decoded 64 MiB plus a few MiB of strips and the 4 MiB result; the full-size
    # path makes RGB and alpha copies of the whole picture on top of it
    assert small["peak_mib"] < 64 + 20, small
    assert small["peak_mib"] < full["peak_mib"] - 30, (small, full)
    im = load_image(path, fit_pixels=1_000_000)
    arr = np.asarray(im)
    assert tuple(arr[10, 10]) == (234, 234, 234)  # Pillow keeps the high byte: 60000 >> 8
    assert tuple(arr[500, 500]) == (35, 78, 156)  # the box, high bytes of 9000, 20000, 40000


def test_big_jpeg_decodes_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(_big_jpeg((6400, 4800)))  # 30.7 MP, 117 MiB once decoded
    small = _peak_mib(path, fit_pixels=1_000_000)
    assert small["size"][0] * small["size"][1] <= 1_000_000 and small["size"][0] >= 1150
    assert small["peak_mib"] < 50, small  # decoded at 1/4 scale (1600x1200), never at full size
    # and it is the same picture as a full decode resized
    got = np.asarray(load_image(path, fit_pixels=1_000_000)).astype(int)
    ref = load_image(path).resize(tuple(small["size"]), Image.Resampling.LANCZOS)
    assert np.abs(got - np.asarray(ref).astype(int)).mean() < 2.0


def test_max_decode_bytes_refuses_from_the_header(tmp_path):
    data = png16_rgba(3000, 2000)
    assert decode_bytes("RGBA", (3000, 2000)) == 24_000_000
    with pytest.raises(ImageTooLargeError) as err:
        load_image(data, max_decode_bytes=20_000_000)
    msg = str(err.value)
    assert "\n" not in msg and "3000x2000" in msg and "memory" in msg and err.value.http_status == 422
    assert load_image(data, max_decode_bytes=30_000_000).size == (3000, 2000)
    # a JPEG is judged at the scale it will be decoded at
    jpeg = _big_jpeg((4000, 3000))
    with pytest.raises(ImageTooLargeError):
        load_image(jpeg, max_decode_bytes=10_000_000)
    assert load_image(jpeg, fit_pixels=700_000, max_decode_bytes=10_000_000).size[0] <= 1000


def test_strip_shrink_matches_whole_image_resize(monkeypatch):
    monkeypatch.setattr(colour, "_STRIP_PIXELS", 50_000)  # many strips
    src = Image.open(SAMPLES / "shoes.jpg").convert("RGB").resize((1203, 1601))
    got = shrink_to_fit(src, 300_000)
    ref = src.resize(got.size, Image.Resampling.LANCZOS)
    assert got.size[0] * got.size[1] <= 300_000
    assert np.abs(np.asarray(got).astype(int) - np.asarray(ref).astype(int)).max() <= 1

    # RGBA: alpha premultiplied, so the colour under transparent pixels never bleeds in
    rgba = np.zeros((1601, 1203, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere ...
    rgba[:, 600:] = (0, 0, 255, 255)  # ... but only the opaque right half is blue and visible
    got = np.asarray(shrink_to_fit(Image.fromarray(rgba, "RGBA"), 300_000))
    visible = got[..., 3] > 0
    assert visible.any() and got[visible][:, 0].max() <= 1  # no red at the edge


def test_16bit_gray_is_converted_in_strips_exactly(monkeypatch):
    monkeypatch.setattr(colour, "_STRIP_PIXELS", 10_000)
    ramp = (np.arange(300 * 500, dtype=np.uint32).reshape(300, 500) * 65535 // (300 * 500 - 1))
    buf = io.BytesIO()
    Image.fromarray(ramp.astype(np.uint16)).save(buf, "PNG")
    got = np.asarray(load_image(buf.getvalue()))
    want = ((ramp * 255 + 32767) // 65535).astype(np.uint8)
    assert got.shape == (300, 500, 3) and np.array_equal(got[..., 0], want)
    # 32-bit float samples scale by the maximum of the whole picture, not of each strip
    f = (np.arange(300 * 500, dtype=np.float32).reshape(300, 500) / (300 * 500 - 1)) * 0.5
    buf = io.BytesIO()
    Image.fromarray(f, "F").save(buf, "TIFF")
    got = np.asarray(load_image(buf.getvalue()))[..., 0].astype(int)
    assert got[-1, -1] == 128 and got[0, 0] == 0  # top <= 1: scaled by 255 everywhere
