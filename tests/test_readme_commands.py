"""Every shell block README shows runs here as written, in README's order, in one folder.

The blocks are read from README.md with markdown-it-py (the fenced ``sh`` blocks), so
a command that fails, or drifts from the code, fails this suite. The folder holds the
inputs README's examples name (``photos/``, ``products/`` with a folder per label,
``labels.csv``, ``new_products/``, ``photo.jpg``, ``shots/``, ``keys.txt`` ...), made
from the shipped sample photos; each command of a block (continuation lines joined) then
runs there with ``bash -c``, the ``shelfready`` of this environment first on PATH, and
leaves its outputs for the commands after it (``check ready/dress.jpg`` reads what
``clean`` wrote); ``make`` commands run in the repository.

A comment just before a block steers it:
``<!-- readme-test: skip REASON -->`` (a cluster, a GPU, a long run: the test skips
with the reason), ``<!-- readme-test: skip-line PREFIX: REASON -->`` (one line of the
block), ``<!-- readme-test: servers -->`` (each line starts a server; it must answer
/readyz; the last keeps running for the blocks after it).

Each block also has an output check below (``CHECKS``, by the block's first command):
a block without one fails, so a new README example comes with what it must produce.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES
from PIL import Image

README = ROOT / "README.md"
BIN = Path(sys.executable).parent
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(skip-line|skip|servers)\b\s*(.*?)\s*-->", re.S)
KEY = "readme-test-key"
PORT = 8000  # README's examples call 127.0.0.1:8000


@dataclass
class Block:
    line: int  # README line of the opening fence
    text: str
    skip: str | None = None
    skip_lines: tuple[tuple[str, str], ...] = ()
    servers: bool = False

    @property
    def commands(self) -> list[str]:
        """The block's commands: continuation lines joined, comment lines left out."""
        out, cur = [], ""
        for ln in self.text.splitlines():
            if not cur and (not ln.strip() or ln.lstrip().startswith("#")):
                continue
            cur += ln.rstrip()[:-1] + " " if ln.rstrip().endswith("\\") else ln
            if not ln.rstrip().endswith("\\"):
                out.append(cur)
                cur = ""
        return out

    @property
    def first(self) -> str:
        return next(ln for ln in self.text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))

    @property
    def id(self) -> str:
        return f"L{self.line}-" + re.sub(r"[^a-z0-9]+", "-", " ".join(self.first.split()[:3]).lower()).strip("-")


def readme_blocks() -> list[Block]:
    from markdown_it import MarkdownIt

    blocks, pending = [], None
    for tok in MarkdownIt("commonmark").parse(README.read_text(encoding="utf-8")):
        if tok.type == "html_block" and (m := DIRECTIVE.search(tok.content)):
            pending = m.groups()
            continue
        if tok.type == "fence" and tok.info.strip() in ("sh", "bash", "shell"):
            block = Block(line=tok.map[0] + 1, text=tok.content)
            if pending:
                kind, arg = pending
                if kind == "skip":
                    block.skip = arg
                elif kind == "servers":
                    block.servers = True
                else:
                    prefix, _, reason = arg.partition(":")
                    block.skip_lines = ((prefix.strip(), reason.strip()),)
            blocks.append(block)
        pending = None if tok.type != "html_block" else pending
    return blocks


BLOCKS = readme_blocks()


def _env(ws: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFREADY_", "RAY_ADDRESS"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", KEY=KEY, PYTHONUNBUFFERED="1")
    return env


def _copy(names: list[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLES / name, folder / name)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The folder README's examples run in, with the inputs they name, from the sample photos."""
    ws = tmp_path_factory.mktemp("readme")
    _copy(["dress.jpg", "hat.jpg", "shoes.jpg"], ws / "photos")
    classes = {"shoes": ["shoes.jpg", "shoes-2.jpg"], "hats": ["hat.jpg", "hat-2.jpg"],
               "tops": ["shirt.jpg", "t-shirt.jpg"]}
    for label, names in classes.items():
        _copy(names, ws / "products" / label)
    rows = [f"{label}/{n},{label}" for label, names in classes.items() for n in names]
    (ws / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    _copy(["longsleeve.jpg"], ws / "new_products" / "tops")
    shutil.copy(SAMPLES / "shoes-2.jpg", ws / "photo.jpg")
    shutil.copy(SAMPLES / "skirt.jpg", ws / "photo1.jpg")
    Image.open(SAMPLES / "pants.jpg").save(ws / "photo2.png")
    for label, name in (("shoes", "shoes-2.jpg"), ("hats", "hat-2.jpg"), ("tops", "longsleeve.jpg")):
        _copy([name], ws / "shots" / label)
    (ws / "keys.txt").write_text(KEY + "\n")
    (ws / "sample_images").symlink_to(SAMPLES)
    # README's text search needs a CLIP catalog: open_clip's ViT-S-32 with random weights (no CLIP
    # weights can be had offline), built by the same command a user with weights runs
    proc = subprocess.run(["shelfready", "catalog", "build", "products/", "--labels-from-folders",
                           "--out", "clipcat/", "--embedder", "clip:ViT-S-32/random", "--quiet"],
                          cwd=ws, env=_env(ws), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ws


@dataclass
class Ran:
    command: str
    rc: int
    stdout: str
    stderr: str


def _run(command: str, cwd: Path, timeout: float = 900) -> Ran:
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return Ran(command, proc.returncode, proc.stdout, proc.stderr)


def succeeded(ran: list[Ran]) -> None:
    for r in ran:
        assert r.rc == 0, f"`{r.command}` exited {r.rc}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


def _get(path: str, timeout: float = 2.0) -> tuple[int, str]:
    import httpx

    try:
        r = httpx.get(f"http://127.0.0.1:{PORT}{path}", timeout=timeout)
        return r.status_code, r.text
    except httpx.HTTPError as exc:
        return 0, str(exc)


def _port_free() -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", PORT)) != 0


class Servers:
    """The servers a ``servers`` block started; the last is left running for the blocks after it."""

    def __init__(self) -> None:
        self.running: subprocess.Popen | None = None

    def start(self, command: str, ws: Path, log: Path) -> subprocess.Popen:
        if not _port_free():
            pytest.fail(f"port {PORT} is taken: README's server examples listen there")
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ws, env=_env(ws), stdout=log.open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"`{command}` exited {proc.returncode}: {log.read_text()[-1500:]}")
            if _get("/readyz")[0] == 200:
                return proc
            time.sleep(0.5)
        self.stop(proc)
        pytest.fail(f"`{command}` not ready in 300 s: {log.read_text()[-1500:]}")

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for _ in range(100):  # the port is free again before the next server starts
            if _port_free():
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    yield s
    if s.running is not None:
        s.stop(s.running)


# ------------------------------------------------------------------ what each block must produce


def _image(path: Path) -> Image.Image:
    assert path.is_file(), f"{path} was not written"
    im = Image.open(path)
    im.load()
    return im


def _summary(out: Path) -> list[dict]:
    rows = json.loads((out / "summary.json").read_text())["photos"]
    assert rows and all(r["status"] in ("cleaned", "needs_review") for r in rows), rows
    return rows


def _out(ran: list[Ran]) -> str:
    return "".join(r.stdout for r in ran)


def check_quick_start(ws, ran):
    succeeded(ran)
    demo = ROOT / "out" / "demo"
    data = json.loads((demo / "report" / "report.json").read_text())
    assert data["settings"]["n_queries"] == 40 and data["settings"]["n_catalog"] == 40
    assert "index.html" in _out(ran) and (demo / "report" / "index.html").is_file()


def check_clean(ws, ran):
    succeeded(ran)
    names = sorted(p.name for p in (ws / "photos").iterdir())
    for out, fill, size in (("ready", 0.85, 1600), ("large", 0.8, 2000)):
        rows = {r["rel"]: r for r in _summary(ws / out)}
        assert sorted(rows) == names
        for name in names:
            im = _image(ws / out / Path(name).with_suffix(".jpg"))
            small = any("max upscale" in r for r in rows[name]["reasons"])  # a smaller canvas, flagged
            side = im.size[0] if small else size
            assert im.format == "JPEG" and im.size == (side, side) and 256 <= side <= size
            if rows[name]["status"] == "cleaned":
                assert abs(rows[name]["checks"]["fill"] - fill) < 0.02, rows[name]
    assert len(_summary(ws / "cutouts")) == len(names)
    for name in names:
        cut = _image(ws / "cutouts" / Path(name).with_suffix(".png"))
        assert cut.format == "PNG" and cut.mode == "RGBA"
        assert cut.getchannel("A").getextrema() == (0, 255)  # transparent around the product, opaque inside


def check_check(ws, ran):
    # the sample photos are small (400x533): cleaned for amazon they stay under its 1000 px zoom size
    assert [r.rc for r in ran] == [1, 1], [(r.command, r.rc, r.stderr) for r in ran]
    text = ran[0].stdout
    assert text.startswith("ready/dress.jpg: NOT READY (amazon")
    assert re.search(r"ok +white_background +1\.0", text) and re.search(r"FAIL size", text)
    data = json.loads(ran[1].stdout)
    assert [Path(r["path"]).name for r in data] == ["photo1.jpg", "photo2.png"]
    assert all(r["checks"]["white_background"]["passed"] is False for r in data)  # raw photos


def check_models(ws, ran):
    succeeded(ran)
    listing = ran[-1].stdout
    for name in ("u2netp", "isnet-imgly", "u2net", "efficientnet_lite0"):
        assert name in listing
    assert "AGPL-3.0" in listing and "Apache-2.0" in listing


def _catalog(path: Path):
    from search import Catalog

    return Catalog.open(path)


def _labels(cat) -> list[str]:
    return sorted(cat.get(i).label for i in cat.ids())


def check_catalog(ws, ran):
    succeeded(ran)
    cat, hnsw = _catalog(ws / "cat"), _catalog(ws / "cat-hnsw")
    assert hnsw.index_type == "hnsw"
    assert _labels(hnsw) == ["hats", "hats", "shoes", "shoes", "tops", "tops"]
    assert _labels(cat) == ["hats", "hats", "shoes", "shoes", "tops", "tops", "tops"]  # + new_products/
    search, text = ran[3].stdout, ran[4].stdout
    hits = [ln for ln in search.splitlines() if "shoes" in ln or "hats" in ln or "tops" in ln]
    assert len(hits) == 5 and "shoes" in hits[0], search  # photo.jpg is a photo of shoes
    assert len([ln for ln in text.splitlines() if re.search(r"hats|shoes|tops", ln)]) >= 1, text


def check_evaluate(ws, ran):
    succeeded(ran)
    data = json.loads((ws / "report" / "report.json").read_text())
    assert data["settings"]["n_queries"] == 3
    assert (ws / "report" / "index.html").is_file() and (ws / "report" / "per_photo.csv").is_file()


def check_dedup(ws, ran):
    import hashlib

    succeeded(ran)
    out = ws / "dups"
    groups = [set(g["photos"]) for g in json.loads((out / "duplicates.json").read_text())["groups"]]
    shoes2 = next(g for g in groups if "photo.jpg" in g)  # photo.jpg is a copy of shoes-2.jpg, as are two more
    assert {"products/shoes/shoes-2.jpg", "shots/shoes/shoes-2.jpg"} <= shoes2, groups
    samples = {hashlib.sha256(p.read_bytes()).digest(): p.name for p in SAMPLES.glob("*.jpg")}
    for g in groups:  # copies of one sample photo each, never two different photos together
        assert not any(p.split("/")[0] in ("ready", "large", "cutouts", "dups") for p in g)  # outputs are not read
        origin = {samples.get(hashlib.sha256((ws / p).read_bytes()).digest()) for p in g} - {None}
        assert len(origin) <= 1, g
    rows = (out / "duplicates.csv").read_text().splitlines()
    assert rows[0].startswith("group,path,kind,score") and len(rows) == 1 + sum(map(len, groups))
    removed = (out / "remove.txt").read_text().splitlines()
    assert len(removed) == sum(len(g) - 1 for g in groups) and all((ws / p).is_file() for p in removed)
    assert (out / "index.html").is_file() and "nothing was removed" in ran[0].stdout


def check_scaling(ws, ran):
    succeeded(ran)
    assert len(_summary(ws / "ready")) == 3
    ray, parquet = _catalog(ws / "raycat"), _catalog(ws / "parquetcat")

    def items(c):
        return sorted((c.get(i).label, c.get(i).content_hash) for i in c.ids())

    assert len(items(ray)) == 6 and items(ray) == items(parquet) == items(_catalog(ws / "cat-hnsw"))
    data = json.loads((ws / "ray-report" / "report.json").read_text())
    assert data["settings"]["n_queries"] == 3


def check_curl(ws, ran):
    succeeded(ran)
    headers = (ws / "headers.txt").read_text()
    assert headers.startswith("HTTP/1.1 200") and "x-shelfready-report" in ran[1].stdout.lower()
    im = _image(ws / "dress-clean.jpg")
    assert im.format == "JPEG" and im.size[0] == im.size[1] <= 1600
    compact = [r.stdout.replace(" ", "") for r in ran]
    assert compact[2].startswith('{"report":')  # JSON, cut by head -c 300
    assert json.loads(ran[3].stdout)["report"]["checks"]["white_background"]["passed"] is False
    added = json.loads(ran[4].stdout)
    assert added["sku"] == "SH-001" and added["label"] == "shoes"
    hits = json.loads(ran[5].stdout)["hits"]
    assert hits[0]["sku"] == "SH-001"
    assert json.loads(ran[6].stdout)["deleted"] is True


CHECKS = {
    "make demo": check_quick_start,
    "shelfready clean photos/ ready/ --preset": check_clean,
    "shelfready check": check_check,
    "shelfready models fetch": check_models,
    "shelfready catalog build products/ --labels-from-folders --out cat/ ": check_catalog,
    "shelfready evaluate --catalog cat/": check_evaluate,
    "shelfready dedup": check_dedup,
    "shelfready clean photos/ ready/ --engine ray": check_scaling,
    "# cleaned JPEG": check_curl,
}


def _check_for(block: Block):
    start = block.text.lstrip()
    found = [f for prefix, f in CHECKS.items() if start.startswith(prefix) or block.first.startswith(prefix)]
    return found[0] if found else None


def test_readme_has_the_blocks_this_file_checks():
    assert len(BLOCKS) >= 9
    for prefix in CHECKS:
        assert any(b.text.lstrip().startswith(prefix) or b.first.startswith(prefix) for b in BLOCKS), prefix


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_as_written(block, workspace, servers, tmp_path, request):
    if block.skip:
        pytest.skip(f"README line {block.line}: {block.skip}")
    if block.servers:
        lines = [ln.split("  #")[0].strip() for ln in block.text.splitlines() if ln.strip()]
        for i, command in enumerate(lines):
            if servers.running is not None:
                servers.stop(servers.running)
            servers.running = servers.start(command, workspace, tmp_path / f"server{i}.log")
            assert _get("/healthz")[0] == 200
        return
    check = _check_for(block)
    assert check is not None, f"README line {block.line}: no output check for `{block.first}` in {__file__}"
    skipped = [prefix for prefix, _reason in block.skip_lines]
    commands = [c for c in block.commands if not any(c.startswith(p) for p in skipped)]
    cwd = ROOT if commands[0].startswith("make ") else workspace
    ran = [_run(c, cwd) if c.split("#")[0].strip() != "make demo" else Ran(c, 0, request.getfixturevalue("made_demo")[1], "")
           for c in commands]  # `make demo` runs once a session (made_demo), read by the demo's tests too
    for r in ran:
        assert "Traceback" not in r.stderr, f"`{r.command}`: {r.stderr[-3000:]}"
    check(workspace, ran)
