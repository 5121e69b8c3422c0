"""The documented `shelfready clean` commands still write, byte for byte, the outputs recorded before
the house move (tests/data/output_hashes.json, made by tests/output_hashes.py)."""
import json

import pytest

import output_hashes

REWRITE = ".venv/bin/python -m tests.output_hashes --write"


@pytest.mark.slow
def test_clean_outputs_are_the_recorded_bytes(tmp_path):
    recorded = json.loads(output_hashes.RECORD.read_text())
    other = output_hashes.other_cpu(recorded["machine"])
    if other:  # the default runtime (OpenVINO bf16 where the CPU has it) computes with this CPU's kernels
        pytest.skip(f"output hashes not comparable: {other}; re-record here with `{REWRITE}`")
    made = output_hashes.run_commands(tmp_path)
    differ = []
    for command in sorted(recorded["outputs"].keys() | made.keys()):
        want, got = recorded["outputs"].get(command, {}), made.get(command, {})
        for rel in sorted(want.keys() | got.keys()):
            if rel not in got:
                differ.append(f"{command}: {rel}: not written")
            elif rel not in want:
                differ.append(f"{command}: {rel}: new file")
            elif got[rel] != want[rel]:
                differ.append(f"{command}: {rel}: other bytes")
    engines = {k: v for k, v in output_hashes.machine().items() if recorded["machine"].get(k) != v}
    assert not differ, (f"{len(differ)} output files differ from {output_hashes.RECORD.name}"
                        + (f" (engines here: {engines}, recorded: {recorded['machine']})" if engines else "")
                        + ":\n" + "\n".join(differ))
