"""Makers of odd and broken image files, built from a real sample photo."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims width x height (a decompression bomb header)."""
    import io

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def make_bad_files(photo: Path, folder: Path) -> dict[str, Path]:
    """Files that must each give a one-line error."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = photo.read_bytes()
    files = {
        "zero_bytes": (folder / "empty.jpg", b""),
        "truncated": (folder / "truncated.jpg", raw[: len(raw) // 2]),
        "corrupt": (folder / "corrupt.jpg", raw[:200] + bytes(range(256)) * 40),
        "text_as_jpg": (folder / "notes.jpg", b"this is not an image, just some text\n" * 20),
        "bomb_header": (folder / "bomb.png", _png_with_header_size(20000, 20000)),
    }
    out = {}
    for name, (path, data) in files.items():
        path.write_bytes(data)
        out[name] = path
    tiny = folder / "tiny.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tiny)
    out["one_pixel"] = tiny
    return out


def make_odd_files(photo: Path, folder: Path) -> dict[str, Path]:
    """Valid but unusual files that must load and clean correctly."""
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.open(photo).convert("RGB")
    out = {}
    out["cmyk"] = folder / "cmyk.jpg"
    img.convert("CMYK").save(out["cmyk"], "JPEG", quality=95)
    out["rgb16"] = folder / "rgb16.png"
    import cv2

    cv2.imwrite(str(out["rgb16"]), (np.asarray(img)[..., ::-1].astype(np.uint16) * 257))
    out["palette_transparent"] = folder / "palette.png"
    pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = pal.getpixel((0, 0))
    pal.save(out["palette_transparent"], transparency=pal.getpixel((0, 0)))
    out["exif_rotated"] = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    img.rotate(90, expand=True).save(out["exif_rotated"], "JPEG", exif=exif, quality=95)
    out["heic"] = folder / "photo.heic"
    import pillow_heif

    pillow_heif.from_pillow(img).save(out["heic"], quality=90)
    out["gif_animated"] = folder / "anim.gif"
    img.save(out["gif_animated"], save_all=True, append_images=[img.rotate(10)], duration=100, loop=0)
    out["gray"] = folder / "gray.jpg"
    img.convert("L").save(out["gray"], quality=95)
    return out
