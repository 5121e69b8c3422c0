"""photos.io: every odd or broken input is built here from the real sample photos.

Fast (no model). Good inputs are checked for mode, size and pixels against a
reference; bad inputs for the exact error kind and its one-line message.
"""
from __future__ import annotations

import functools
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, ImageOps, features

import photos.save as hsave
import photos.sniff as sniff
from photos.config import LoadLimits, OutputConfig
from photos.io import (
    CorruptImageError,
    EmptyFileError,
    FileTooLargeError,
    ImageLoadError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    TruncatedImageError,
    UnreadableFileError,
    UnsupportedFormatError,
    encode_image,
    load_image,
    output_suffix,
    save_image_atomic,
    sniff_format,
    write_bytes_atomic,
    write_text_atomic,
)

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
PHOTO = SAMPLES / "shirt.jpg"  # 533 x 400, landscape: orientation swaps are visible


# ----------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=1)
def _photo_cached() -> Image.Image:
    with Image.open(PHOTO) as im:
        return im.convert("RGB")


def _photo() -> Image.Image:
    return _photo_cached().copy()


def _enc(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im).astype(np.int32)


def _mad(a, b) -> float:
    a, b = np.asarray(a, dtype=np.int32), np.asarray(b, dtype=np.int32)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).mean())


@functools.lru_cache(maxsize=4)
def _heic(orientation: int = 1) -> bytes:
    """The sample as HEIC (x265 is slow: encode each variant once per run)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    return _enc(_photo(), "HEIF", quality=95, exif=exif.tobytes(), enc_params={"preset": "ultrafast"})


def _patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """A valid PNG whose IHDR now claims width x height (CRC recomputed)."""
    d = bytearray(png)
    assert d[12:16] == b"IHDR"
    d[16:24] = struct.pack(">II", width, height)
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    return bytes(d)


def _png_bomb(width: int, height: int) -> bytes:
    return _patch_png_size(_enc(Image.new("L", (16, 16), 255), "PNG"), width, height)


def _gif_bomb(width: int, height: int) -> bytes:
    d = bytearray(_enc(Image.new("L", (16, 16), 255), "GIF"))
    d[6:10] = struct.pack("<HH", width, height)  # logical screen size
    return bytes(d)


def _bmp_bomb(width: int, height: int) -> bytes:
    d = bytearray(_enc(Image.new("RGB", (16, 16)), "BMP"))
    d[18:26] = struct.pack("<ii", width, height)
    return bytes(d)


# --- ICC profiles -------------------------------------------------------------------


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _swap_icc_tags(icc: bytes, a: bytes, b: bytes) -> bytes:
    """Swap two entries of the tag table (e.g. rXYZ <-> bXYZ: red and blue primaries)."""
    d = bytearray(icc)
    count = struct.unpack(">I", d[128:132])[0]
    where = {bytes(d[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    oa, ob = where[a], where[b]
    d[oa + 4 : oa + 12], d[ob + 4 : ob + 12] = d[ob + 4 : ob + 12], d[oa + 4 : oa + 12]
    return bytes(d)


def _s15(x: float) -> bytes:
    return struct.pack(">i", int(round(x * 65536)))


@functools.lru_cache(maxsize=1)
def _cmyk_swapped_profile(grid: int = 9) -> bytes:
    """A minimal ICC v2 CMYK profile (lut8 A2B0, Lab PCS) in which cyan ink
    prints yellow and yellow prints cyan; black and magenta are plain.

    So a CMYK file made with Pillow's naive RGB->CMYK must come out with red and
    blue swapped if (and only if) the loader applies the embedded profile.
    """
    steps = [i / (grid - 1) for i in range(grid)]
    rgb = np.array(
        [
            (255 * (1 - y) * (1 - k), 255 * (1 - m) * (1 - k), 255 * (1 - c) * (1 - k))
            for c in steps
            for m in steps
            for y in steps
            for k in steps
        ]
    ).round().astype(np.uint8)
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    lab = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb.reshape(1, -1, 3)), to_lab)).copy()
    lab[..., 1:] ^= 0x80  # Pillow's LAB a/b are signed; lut8 wants them offset by 128
    identity = bytes(range(256))
    matrix = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a2b0 = (
        b"mft1" + bytes(4) + bytes([4, 3, grid, 0]) + matrix
        + identity * 4 + lab.reshape(-1).tobytes() + identity * 3
    )
    text = b"test CMYK\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8) + bytes(3) + bytes(67)
    tags = [
        (b"desc", desc),
        (b"wtpt", b"XYZ " + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)),
        (b"cprt", b"text" + bytes(4) + b"none\x00"),
        (b"A2B0", a2b0),
    ]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        body += bytes(-(start + len(body)) % 4)
        table += sig + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", start + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"prtr" + b"CMYK"
        + b"Lab " + bytes(12) + b"acsp" + bytes(4 * 4 + 8 + 4)
        + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(4 + 16 + 28)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


# ----------------------------------------------------------------------------- good inputs
#
# Each builder returns (source bytes, expected array, expected mode, tolerance as
# mean absolute difference). Tolerance 0 means bit-exact.


def _case_jpeg():
    data = PHOTO.read_bytes()
    return data, _arr(_photo()), "RGB", 0


def _case_png_rgb():
    src = _photo()
    return _enc(src, "PNG"), _arr(src), "RGB", 0


def _case_gray_jpeg():
    gray = _photo().convert("L")
    ref = np.repeat(_arr(gray)[..., None], 3, axis=2)
    return _enc(gray, "JPEG", quality=95), ref, "RGB", 3


def _case_bilevel_png():
    bits = _photo().convert("1")
    ref = np.repeat(np.where(np.asarray(bits), 255, 0)[..., None], 3, axis=2)
    return _enc(bits, "PNG"), ref, "RGB", 0


def _alpha_ramp(size) -> np.ndarray:
    w, h = size
    ramp = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    return ramp


def _case_la_png():
    gray = _photo().convert("L")
    alpha = _alpha_ramp(gray.size)
    la = Image.merge("LA", (gray, Image.fromarray(alpha)))
    g = _arr(gray)
    ref = np.dstack([g, g, g, alpha.astype(np.int32)])
    return _enc(la, "PNG"), ref, "RGBA", 0


def _case_la_png_opaque():
    gray = _photo().convert("L")
    la = Image.merge("LA", (gray, Image.new("L", gray.size, 255)))
    return _enc(la, "PNG"), np.repeat(_arr(gray)[..., None], 3, axis=2), "RGB", 0


def _case_rgba_png():
    src = _photo()
    alpha = _alpha_ramp(src.size)
    rgba = src.copy()
    rgba.putalpha(Image.fromarray(alpha))
    return _enc(rgba, "PNG"), _arr(rgba), "RGBA", 0


def _case_rgba_png_opaque():
    src = _photo()
    return _enc(src.convert("RGBA"), "PNG"), _arr(src), "RGB", 0


def _palette(colors=64) -> Image.Image:
    return _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=colors)


def _palette_rgb(p: Image.Image) -> np.ndarray:
    pal = np.array(p.getpalette(), dtype=np.int32).reshape(-1, 3)
    return pal[np.asarray(p)]


def _case_palette_trns_png():
    p = _palette()
    idx = np.asarray(p)
    clear = int(np.bincount(idx.ravel()).argmax())  # the most used colour becomes transparent
    ref = np.dstack([_palette_rgb(p), np.where(idx == clear, 0, 255)])
    return _enc(p, "PNG", transparency=clear), ref, "RGBA", 0


def _case_palette_unused_trns_png():
    p = _palette(64)
    return _enc(p, "PNG", transparency=200), _palette_rgb(p), "RGB", 0  # index 200 is never used


def _case_palette_png():
    p = _palette()
    return _enc(p, "PNG"), _palette_rgb(p), "RGB", 0


def _case_gif_animated():
    first = _palette(256)
    second = ImageOps.invert(_photo()).convert("P", palette=Image.Palette.ADAPTIVE)
    data = _enc(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return data, _palette_rgb(first), "RGB", 0


def _case_gif_transparent():
    p = _palette()
    idx = np.asarray(p)
    clear = int(idx[0, 0])
    ref = np.dstack([_palette_rgb(p), np.where(idx == clear, 0, 255)])
    return _enc(p, "GIF", transparency=clear), ref, "RGBA", 0


def _case_webp_lossy():
    src = _photo()
    return _enc(src, "WEBP", quality=95), _arr(src), "RGB", 3


def _case_webp_lossless_rgba():
    src = _photo()
    rgba = src.copy()
    rgba.putalpha(Image.fromarray(_alpha_ramp(src.size)))
    return _enc(rgba, "WEBP", lossless=True, exact=True, method=0), _arr(rgba), "RGBA", 0


def _case_webp_animated():
    src = _photo()
    data = _enc(src, "WEBP", save_all=True, append_images=[ImageOps.invert(src)], lossless=True, duration=100)
    return data, _arr(src), "RGB", 0


def _case_tiff_rgb():
    src = _photo()
    return _enc(src, "TIFF", compression="tiff_lzw"), _arr(src), "RGB", 0


def _case_tiff_cmyk():
    src = _photo()
    return _enc(src.convert("CMYK"), "TIFF"), _arr(src), "RGB", 0


def _case_bmp():
    src = _photo()
    return _enc(src, "BMP"), _arr(src), "RGB", 0


def _gray16():
    """Gray photo as uint16 = g * 257 + noise < 128 (so the right 8-bit value is exactly g)."""
    g = np.asarray(_photo().convert("L")).astype(np.uint16)
    noise = np.random.default_rng(0).integers(0, 128, g.shape, dtype=np.uint16)
    return g * 257 + noise, np.repeat(g.astype(np.int32)[..., None], 3, axis=2)


def _case_png16_gray_pil():
    a16, ref = _gray16()
    im = Image.fromarray(a16)
    assert im.mode == "I;16"
    return _enc(im, "PNG"), ref, "RGB", 0


def _case_png16_gray_cv2():
    a16, ref = _gray16()
    ok, buf = cv2.imencode(".png", a16)
    assert ok
    return buf.tobytes(), ref, "RGB", 0


def _case_tiff16_gray_bigendian():
    a16, ref = _gray16()
    im = Image.fromarray(a16.astype(">u2"))
    assert im.mode == "I;16B"
    return _enc(im, "TIFF"), ref, "RGB", 0


def _case_tiff_mode_i():
    a16, ref = _gray16()
    im = Image.fromarray(a16.astype(np.int32))
    assert im.mode == "I"
    return _enc(im, "TIFF"), ref, "RGB", 0


def _rgb16():
    rgb = np.asarray(_photo()).astype(np.uint16)
    return rgb * 257, rgb.astype(np.int32)


def _case_png16_rgb_cv2():
    a16, ref = _rgb16()
    ok, buf = cv2.imencode(".png", a16[:, :, ::-1].copy())  # cv2 writes BGR
    assert ok
    return buf.tobytes(), ref, "RGB", 0.5


def _case_png16_rgba_cv2():
    a16, ref = _rgb16()
    alpha8 = _alpha_ramp((a16.shape[1], a16.shape[0]))
    bgra = np.dstack([a16[:, :, ::-1], alpha8.astype(np.uint16) * 257])
    ok, buf = cv2.imencode(".png", bgra)
    assert ok
    return buf.tobytes(), np.dstack([ref, alpha8.astype(np.int32)]), "RGBA", 0.5


def _case_tiff16_rgb_cv2():
    a16, ref = _rgb16()
    ok, buf = cv2.imencode(".tif", a16[:, :, ::-1].copy())
    assert ok
    return buf.tobytes(), ref, "RGB", 0.5


def _case_heic():
    return _heic(), _arr(_photo()), "RGB", 3


def _case_heic_rotated():
    # pillow-heif stores orientation 6 as an irot transform, applied by libheif on decode
    return _heic(6), _arr(_photo().transpose(Image.Transpose.ROTATE_270)), "RGB", 3


def _case_mpo_first_picture():
    src = _photo()
    data = _enc(src, "MPO", quality=95, save_all=True, append_images=[ImageOps.invert(src)])
    assert sniff_format(data) == "jpeg"
    return data, _arr(src), "RGB", 3


def _case_cmyk_jpeg():
    src = _photo()
    return _enc(src.convert("CMYK"), "JPEG", quality=95), _arr(src), "RGB", 3


def _case_jpeg_srgb_icc():
    src = _photo()
    return _enc(src, "JPEG", quality=95, icc_profile=_srgb_icc()), _arr(src), "RGB", 3


def _case_jpeg_swapped_primaries_icc():
    src = _photo()
    icc = _swap_icc_tags(_srgb_icc(), b"rXYZ", b"bXYZ")
    return _enc(src, "JPEG", quality=95, icc_profile=icc), _arr(src)[:, :, ::-1], "RGB", 3


def _case_cmyk_jpeg_icc():
    src = _photo()
    data = _enc(src.convert("CMYK"), "JPEG", quality=95, icc_profile=_cmyk_swapped_profile())
    return data, _arr(src)[:, :, ::-1], "RGB", 3


def _case_png_swapped_primaries_icc_rgba():
    src = _photo()
    rgba = src.copy()
    rgba.putalpha(Image.fromarray(_alpha_ramp(src.size)))
    icc = _swap_icc_tags(_srgb_icc(), b"rXYZ", b"bXYZ")
    ref = np.dstack([_arr(src)[:, :, ::-1], _alpha_ramp(src.size).astype(np.int32)])
    return _enc(rgba, "PNG", icc_profile=icc), ref, "RGBA", 3


GOOD_CASES = {
    name[len("_case_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("_case_")
}


@pytest.mark.parametrize("case", sorted(GOOD_CASES))
def test_load_good_inputs(case):
    data, ref, mode, tol = GOOD_CASES[case]()
    img = load_image(data)
    assert img.mode == mode
    assert (img.height, img.width) == ref.shape[:2]
    assert _mad(img, ref) <= tol
    assert type(img) is Image.Image  # detached from the decoder
    assert img.info == {}  # no ICC / EXIF left to mislead a writer


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)  # full 16-bit range
    img = load_image(_enc(Image.fromarray(ramp), "PNG"))
    assert np.array_equal(np.asarray(img)[..., 0], np.arange(256).reshape(16, 16))


def test_icc_profile_is_really_applied():
    """The swapped-primaries profiles must not merely be ignored."""
    src = _photo()
    for data in (
        _enc(src, "JPEG", quality=95, icc_profile=_swap_icc_tags(_srgb_icc(), b"rXYZ", b"bXYZ")),
        _enc(src.convert("CMYK"), "JPEG", quality=95, icc_profile=_cmyk_swapped_profile()),
    ):
        img = load_image(data)
        assert _mad(img, _arr(src)[:, :, ::-1]) * 3 < _mad(img, _arr(src))


def test_animated_gif_takes_the_first_frame_not_the_second():
    data, ref, _, _ = _case_gif_animated()
    img = load_image(data)
    assert _mad(img, ref) == 0
    assert _mad(img, 255 - ref) > 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation):
    src = _photo()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _enc(src, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as raw:
        ref = ImageOps.exif_transpose(raw).convert("RGB")
    img = load_image(data)
    assert img.size == ref.size
    if orientation in (5, 6, 7, 8):
        assert img.size == (src.height, src.width)
    assert _mad(img, ref) == 0
    assert _mad(img, _arr(src.transpose(Image.Transpose.ROTATE_270)) if orientation == 6 else ref) < 3


@pytest.mark.parametrize("container", ["PNG", "WEBP", "TIFF"])
def test_exif_orientation_in_other_containers(container):
    src = _photo()
    exif = Image.Exif()
    exif[0x0112] = 8
    kw = {"tiffinfo": {0x0112: 8}} if container == "TIFF" else {"exif": exif.tobytes()}
    if container == "WEBP":
        kw["lossless"] = True
    img = load_image(_enc(src, container, **kw))
    assert _mad(img, src.transpose(Image.Transpose.ROTATE_90)) == 0


def test_orientation_6_matches_a_rotated_reference():
    src = _photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    img = load_image(_enc(src, "JPEG", quality=95, exif=exif.tobytes()))
    assert img.size == (400, 533)
    assert _mad(img, src.rotate(-90, expand=True)) < 3


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_does_not_reject_the_photo():
    src = _photo()
    data = _enc(src, "JPEG", quality=95, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    assert load_image(data).size == src.size


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "bytearray", "file"])
def test_every_source_kind(tmp_path, kind):
    path = tmp_path / "x.jpg"
    path.write_bytes(PHOTO.read_bytes())
    source = {
        "path": path,
        "str": str(path),
        "bytes": path.read_bytes(),
        "bytearray": bytearray(path.read_bytes()),
        "file": io.BytesIO(path.read_bytes()),
    }[kind]
    img = load_image(source)
    assert img.size == (533, 400) and _mad(img, _photo()) == 0


def test_format_comes_from_bytes_not_name(tmp_path):
    png_named_jpg = tmp_path / "photo.jpg"
    png_named_jpg.write_bytes(_enc(_photo(), "PNG"))
    jpg_named_gif = tmp_path / "photo.gif"
    jpg_named_gif.write_bytes(PHOTO.read_bytes())
    assert _mad(load_image(png_named_jpg), _photo()) == 0
    assert _mad(load_image(jpg_named_gif), _photo()) == 0


def test_no_file_handle_left_open(tmp_path):
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.exists():
        pytest.skip("needs /proc")
    path = tmp_path / "x.tif"
    path.write_bytes(_enc(_photo(), "TIFF"))
    before = len(os.listdir(fd_dir))
    imgs = [load_image(path) for _ in range(5)]
    assert len(os.listdir(fd_dir)) == before
    assert all(getattr(im, "fp", None) is None for im in imgs)


# ----------------------------------------------------------------------------- bad inputs


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bad_zero_bytes():
    return b""


def _bad_text_named_jpg():
    return "SKU;colour;size\n1234;blue;M\nnot really a photo — ünïcode\n".encode()


def _bad_html_named_jpg():
    return b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body></body></html>\n"


def _bad_pdf():
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"


def _bad_svg():
    return b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n'


def _bad_random_bytes():
    return np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _bad_truncated_jpeg():
    return _half(PHOTO.read_bytes())


def _bad_jpeg_header_only():
    return PHOTO.read_bytes()[:100]


def _bad_jpeg_magic_only():
    return PHOTO.read_bytes()[:3]


def _bad_truncated_png():
    return _half(_enc(_photo(), "PNG"))


def _bad_truncated_webp():
    return _half(_enc(_photo(), "WEBP"))


def _bad_truncated_gif():
    return _half(_enc(_photo(), "GIF"))


def _bad_truncated_tiff():
    return _half(_enc(_photo(), "TIFF"))


def _bad_truncated_bmp():
    return _half(_enc(_photo(), "BMP"))


def _bad_truncated_heic():
    return _half(_heic())


def _bad_png_bad_header_crc():
    d = bytearray(_enc(_photo(), "PNG"))
    d[30] ^= 0xFF  # inside IHDR's CRC
    return bytes(d)


def _bad_png_broken_idat():
    d = bytearray(_enc(_photo(), "PNG"))
    i = d.index(b"IDAT")
    d[i + 100 : i + 200] = bytes(100)
    return bytes(d)


def _bad_png_bomb_400mp():
    return _png_bomb(20000, 20000)


def _bad_png_81mp():
    return _png_bomb(9000, 9000)


def _bad_gif_bomb():
    return _gif_bomb(20000, 20000)


def _bad_bmp_bomb():
    return _bmp_bomb(20000, 20000)


def _bad_one_pixel():
    return _enc(Image.new("RGB", (1, 1), "white"), "PNG")


def _bad_thin_strip():
    return _enc(_photo().resize((533, 15)), "PNG")


def _bad_ico():
    return _enc(_photo(), "ICO")


BAD_CASES = {
    # name: (error class, exact message or a fragment, exact?)
    "zero_bytes": (EmptyFileError, "empty file (0 bytes)", True),
    "text_named_jpg": (NotAnImageError, "not an image (looks like text)", True),
    "html_named_jpg": (NotAnImageError, "not an image (looks like an HTML page)", True),
    "pdf": (NotAnImageError, "not an image (looks like a PDF document)", True),
    "svg": (UnsupportedFormatError, "unsupported image format: SVG", False),
    "random_bytes": (NotAnImageError, "not an image (unrecognised file format)", True),
    "truncated_jpeg": (TruncatedImageError, "truncated image file", True),
    "jpeg_header_only": (TruncatedImageError, "truncated image file", True),
    "jpeg_magic_only": (TruncatedImageError, "truncated image file", True),
    "truncated_png": (TruncatedImageError, "truncated image file", True),
    "truncated_webp": (TruncatedImageError, "truncated image file", True),
    "truncated_gif": (TruncatedImageError, "truncated image file", True),
    "truncated_tiff": (TruncatedImageError, "truncated image file", True),
    "truncated_bmp": (TruncatedImageError, "truncated image file", True),
    "truncated_heic": (TruncatedImageError, "truncated image file", True),
    "png_bad_header_crc": (CorruptImageError, "corrupt PNG image: cannot read the header", True),
    "png_broken_idat": (CorruptImageError, "corrupt PNG image:", False),
    "png_bomb_400mp": (
        ImageTooLargeError, "image too large: 20000x20000 = 400.0 MP exceeds the 60.0 MP limit", True),
    "png_81mp": (ImageTooLargeError, "image too large: 9000x9000 = 81.0 MP exceeds the 60.0 MP limit", True),
    "gif_bomb": (
        ImageTooLargeError, "image too large: 20000x20000 = 400.0 MP exceeds the 60.0 MP limit", True),
    "bmp_bomb": (
        ImageTooLargeError, "image too large: 20000x20000 = 400.0 MP exceeds the 60.0 MP limit", True),
    "one_pixel": (ImageTooSmallError, "image too small: 1x1 (minimum 16 px)", True),
    "thin_strip": (ImageTooSmallError, "image too small: 533x15 (minimum 16 px)", True),
    "ico": (UnsupportedFormatError, "unsupported image format: ICO", True),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_bad_inputs(tmp_path, monkeypatch, case, as_path):
    data = globals()[f"_bad_{case}"]()
    cls, message, exact = BAD_CASES[case]
    source = data
    if as_path:
        source = tmp_path / "upload.jpg"  # always ".jpg": the name must not matter
        source.write_bytes(data)
    if cls in (ImageTooLargeError, ImageTooSmallError):
        # size guards act on the header: not one pixel may be decoded
        def no_decode(self, *a, **k):
            raise AssertionError("pixels decoded before the size guard")

        monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(cls) as info:
        load_image(source)
    err = info.value
    text = str(err)
    assert text == message if exact else message in text, text
    assert "\n" not in text and "Traceback" not in text
    assert isinstance(err, ValueError) and isinstance(err, ImageLoadError)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow cannot write AVIF")
def test_avif_is_named_unsupported():
    data = _enc(_photo(), "AVIF")
    assert sniff_format(data) is None
    with pytest.raises(UnsupportedFormatError, match="^unsupported image format: AVIF$"):
        load_image(data)


def test_file_too_large_is_decided_by_stat(tmp_path):
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.write(PHOTO.read_bytes())
        f.truncate(int(60.2 * 1024 * 1024))  # sparse: costs no disk
    with pytest.raises(FileTooLargeError) as info:
        load_image(big)
    assert str(info.value) == "file too large: 60.2 MB exceeds the 50.0 MB limit"
    assert info.value.http_status == 413


def test_custom_limits():
    data = _enc(_photo(), "PNG")
    with pytest.raises(FileTooLargeError, match=r"^file too large: \d+\.\d KB exceeds the 9\.8 KB limit$"):
        load_image(data, LoadLimits(max_bytes=10_000))
    with pytest.raises(FileTooLargeError):
        load_image(io.BytesIO(data), LoadLimits(max_bytes=10_000))
    with pytest.raises(ImageTooLargeError, match=r"^image too large: 533x400 = 0\.2 MP exceeds the 0\.1 MP limit$"):
        load_image(data, LoadLimits(max_pixels=100_000))
    with pytest.raises(ImageTooSmallError, match=r"^image too small: 533x400 \(minimum 1000 px\)$"):
        load_image(data, LoadLimits(min_side=1000))
    assert load_image(_enc(Image.new("RGB", (1, 1)), "PNG"), LoadLimits(min_side=1)).size == (1, 1)


def test_pillow_bomb_warning_turned_error_is_still_a_load_error():
    """Above Pillow's own limit but inside ours: if the caller's warning filters
    make DecompressionBombWarning an exception, it still becomes ImageLoadError."""
    data = _png_bomb(9500, 9500)  # 90.25 MP > Pillow's 89.5 MP warning threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLargeError, match="decompression-bomb limit"):
            load_image(data, LoadLimits(max_pixels=100_000_000))


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_unreadable_paths(tmp_path, what):
    path = tmp_path / "nope.jpg" if what == "missing" else tmp_path
    with pytest.raises(UnreadableFileError, match="^cannot read file: "):
        load_image(path)


def test_error_codes_for_http():
    assert FileTooLargeError("x").http_status == 413
    assert NotAnImageError("x").http_status == UnsupportedFormatError("x").http_status == 415
    for cls in (EmptyFileError, CorruptImageError, TruncatedImageError, ImageTooSmallError, ImageTooLargeError):
        assert cls("x").http_status == 422
    codes = {c.code for c in (EmptyFileError, FileTooLargeError, ImageTooLargeError, ImageTooSmallError,
                              UnsupportedFormatError, NotAnImageError, CorruptImageError,
                              TruncatedImageError, UnreadableFileError)}
    assert len(codes) == 9
    assert str(ImageLoadError("two\nlines")) == "two lines"


def test_no_global_pillow_state_changed():
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    for case in ("truncated_jpeg", "png_bomb_400mp", "png_81mp", "text_named_jpg"):
        with pytest.raises(ImageLoadError):
            load_image(globals()[f"_bad_{case}"]())
    load_image(_case_cmyk_jpeg_icc()[0])
    assert (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before


# ----------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: PHOTO.read_bytes(), "jpeg"),
        (lambda: _enc(_photo(), "PNG"), "png"),
        (lambda: _enc(_photo(), "WEBP"), "webp"),
        (_heic, "heif"),
        (lambda: _enc(_photo(), "GIF"), "gif"),
        (lambda: _enc(_photo(), "TIFF"), "tiff"),
        (lambda: _enc(_photo(), "TIFF", big_tiff=True), "tiff"),
        (lambda: _enc(_photo(), "BMP"), "bmp"),
        (lambda: PHOTO.read_bytes()[:3], "jpeg"),
        (lambda: b"", None),
        (_bad_text_named_jpg, None),
        (_bad_html_named_jpg, None),
        (_bad_random_bytes, None),
        (lambda: b"BM is a fine start for a text", None),
        (_bad_ico, None),
    ],
)
def test_sniff_format(make, expected):
    assert sniff_format(make()) == expected


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_pillow_second_opinion(fmt):
    assert sniff._pil_sniff(_enc(_photo(), fmt)) == fmt.lower()


# ----------------------------------------------------------------------------- encoding


def test_output_suffix():
    assert output_suffix(OutputConfig()) == ".jpg"
    assert output_suffix(OutputConfig(format="png")) == ".png"
    assert output_suffix(OutputConfig(format="webp")) == ".webp"
    assert output_suffix("jpeg") == ".jpg"
    with pytest.raises(ValueError):
        output_suffix("gif")


@pytest.mark.parametrize("fmt, sniffed", [("jpg", "jpeg"), ("png", "png"), ("webp", "webp")])
def test_encode_roundtrip(fmt, sniffed):
    src = _photo()
    data = encode_image(src, OutputConfig(format=fmt))
    assert sniff_format(data) == sniffed
    back = load_image(data)
    assert back.mode == "RGB" and back.size == src.size
    assert _mad(back, src) < (0.01 if fmt == "png" else 3)


def test_encode_jpeg_quality_is_used():
    src = _photo()
    low = encode_image(src, OutputConfig(jpeg_quality=40))
    high = encode_image(src, OutputConfig(jpeg_quality=95))
    assert len(low) < len(high)
    with Image.open(io.BytesIO(high)) as im:
        assert im.mode == "RGB"


def test_encode_rgba_as_jpg_is_refused():
    rgba = _photo().convert("RGBA")
    with pytest.raises(ValueError, match="png or webp"):
        encode_image(rgba, OutputConfig(format="jpg"))


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_encode_keeps_transparency(fmt):
    data, ref, _, _ = _case_rgba_png()
    rgba = load_image(data)
    back = load_image(encode_image(rgba, fmt))
    assert back.mode == "RGBA"
    assert _mad(np.asarray(back)[..., 3], ref[..., 3]) < 2


def test_encode_converts_odd_modes():
    gray = _photo().convert("L")
    with Image.open(io.BytesIO(encode_image(gray, "jpg"))) as im:
        assert im.mode == "RGB"
    a16, ref = _gray16()
    back = load_image(encode_image(Image.fromarray(a16), "png"))  # 16-bit: scaled, not clipped
    assert _mad(back, ref) == 0


def test_encode_writes_no_stale_metadata():
    img = _photo()
    img.info["icc_profile"] = _swap_icc_tags(_srgb_icc(), b"rXYZ", b"bXYZ")
    for fmt in ("jpg", "png", "webp"):
        with Image.open(io.BytesIO(encode_image(img, fmt))) as im:
            assert not im.info.get("icc_profile")
            assert 0x0112 not in im.getexif()


# ----------------------------------------------------------------------------- atomic writes


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_save_image_atomic(tmp_path, fmt):
    cfg = OutputConfig(format=fmt)
    target = tmp_path / "out" / f"shirt{output_suffix(cfg)}"
    result = save_image_atomic(_photo(), target, cfg)
    assert result == target and target.is_file()
    assert _leftovers(target.parent, {target.name}) == []
    assert sniff_format(target.read_bytes()) == {"jpg": "jpeg"}.get(fmt, fmt)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_overwrites_in_place(tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    save_image_atomic(_photo(), target, OutputConfig(format="png"))
    assert _mad(load_image(target), _photo()) == 0
    assert _leftovers(tmp_path, {"x.png"}) == []


@pytest.mark.parametrize("existing", [False, True])
def test_failing_encode_leaves_nothing(tmp_path, existing):
    target = tmp_path / "x.jpg"
    if existing:
        target.write_bytes(b"previous result")
    with pytest.raises(ValueError):
        save_image_atomic(_photo().convert("RGBA"), target, OutputConfig(format="jpg"))
    assert _leftovers(tmp_path, {"x.jpg"}) == []
    assert (target.read_bytes() == b"previous result") if existing else not target.exists()


@pytest.mark.parametrize("failing", ["write", "fsync", "replace", "interrupt"])
def test_failing_write_leaves_no_partial_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "x.png"
    target.write_bytes(b"previous result")
    real_write = os.write

    def boom(*a, **k):
        if failing == "interrupt":
            raise KeyboardInterrupt
        raise OSError(28, "No space left on device")

    if failing == "write":
        calls = []

        def half_write(fd, data):  # first chunk lands, then the disk is full
            calls.append(1)
            if len(calls) > 1:
                boom()
            return real_write(fd, bytes(data[: len(data) // 2]))

        monkeypatch.setattr(hsave.os, "write", half_write)
    elif failing in ("fsync", "interrupt"):
        monkeypatch.setattr(hsave.os, "fsync", boom)
    else:
        monkeypatch.setattr(hsave.os, "replace", boom)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_image_atomic(_photo(), target, OutputConfig(format="png"))
    monkeypatch.undo()
    assert target.read_bytes() == b"previous result"
    assert _leftovers(tmp_path, {"x.png"}) == []


def test_write_into_a_folder_path_fails_cleanly(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        write_bytes_atomic(tmp_path / "taken", b"data")
    assert _leftovers(tmp_path, {"taken"}) == []


def test_write_text_and_bytes_atomic(tmp_path):
    text = "sku,status\n1234,ready ✓\n"
    path = write_text_atomic(tmp_path / "deep" / "summary.csv", text)
    assert path.read_text(encoding="utf-8") == text
    write_bytes_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    write_bytes_atomic(tmp_path / "empty.bin", b"")
    assert (tmp_path / "empty.bin").read_bytes() == b""
    assert _leftovers(tmp_path / "deep", {"summary.csv"}) == []
