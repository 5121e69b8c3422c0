"""The sha256 of every output of the documented `shelfready clean` commands, run as a user runs them.

Recorded before the house move (modules moving between packages, behaviour unchanged) so that
tests/test_outputs_unchanged.py can prove the outputs stay byte-for-byte the same:

    .venv/bin/python -m tests.output_hashes --write    # re-record tests/data/output_hashes.json

Without --write it prints what this checkout makes. The commands run through the installed
`shelfready` script beside this Python (a subprocess, default settings, from the repository root),
so nothing here imports the packages that move. The default remover runtime is OpenVINO bf16 on
CPUs with native bf16, whose kernels decide the last bits: the record names the CPU it was made on.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).resolve().parent / "data" / "output_hashes.json"
SHELFREADY = Path(sys.executable).parent / "shelfready"
# command as documented -> (IN, relative to the repository; OUT, made in a scratch folder).
# `clean` takes every photo under IN (subfolders mirrored): demo_data's listings/ and queries/.
COMMANDS = {
    "shelfready clean sample_images OUT1": ("sample_images", "OUT1"),
    "shelfready clean demo_data OUT2": ("demo_data", "OUT2"),
}
# Files the batch writes beside the outputs that are not outputs: the manifest and summary.json/csv
# hold each photo's seconds and per-step timings (and the manifest's lines come in the order the
# workers finished), so their bytes differ from run to run. .shelfready-nodes.jsonl (--engine ray
# only) names the nodes. Every other file in OUT is hashed, masks included if any appear.
NOT_OUTPUTS = {".shelfready-manifest.jsonl", "summary.json", "summary.csv", ".shelfready-nodes.jsonl"}
# the CPU flags that pick the float kernels of onnxruntime/OpenVINO (and bf16 under --precision auto)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def folder_hashes(out: Path) -> dict[str, str]:
    """{path relative to out (posix): sha256 of its bytes} for every output file."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in NOT_OUTPUTS}


def run_commands(scratch: Path) -> dict[str, dict[str, str]]:
    """Run every command in COMMANDS with its OUT under ``scratch``: {command: folder_hashes(OUT)}."""
    hashes = {}
    for command, (in_dir, out_name) in COMMANDS.items():
        out = scratch / out_name
        res = subprocess.run([str(SHELFREADY), "clean", in_dir, str(out)], cwd=ROOT, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL, timeout=1800)
        if res.returncode != 0:
            raise RuntimeError(f"{command} exited {res.returncode}: {res.stdout[-1000:]}{res.stderr[-2000:]}")
        hashes[command] = folder_hashes(out)
    return hashes


def machine() -> dict:
    """The CPU model, the float-kernel flags, and the engines' versions of this machine."""
    model, flags = "", set()
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "cpu_flags": {f: f in flags for f in CPU_FLAGS},
            "onnxruntime": version("onnxruntime"), "openvino": version("openvino")}


def other_cpu(recorded: dict) -> str | None:
    """One line when this CPU differs from the one ``recorded`` (a ``machine()``) in model or
    float-kernel flags, else None."""
    def cpu(m: dict) -> str:
        return f"{m['cpu_model']} ({' '.join(f for f, on in sorted(m['cpu_flags'].items()) if on) or 'no flags'})"

    here = machine()
    if (here["cpu_model"], here["cpu_flags"]) == (recorded["cpu_model"], recorded["cpu_flags"]):
        return None
    return f"this CPU, {cpu(here)}, is not the recording one, {cpu(recorded)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {RECORD.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        record = {"machine": machine(), "outputs": run_commands(Path(scratch))}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if args.write:
        RECORD.write_text(text)
        print(f"wrote {RECORD}: {sum(map(len, record['outputs'].values()))} files")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
