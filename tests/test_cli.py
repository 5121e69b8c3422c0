"""The click adapter: thin commands over the library, run with CliRunner."""
import json
import shutil

import click
import pytest
from click.testing import CliRunner

from cli.main import cli


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command of the click group, as the words that invoke it."""
    out = []
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        out += command_paths(cmd, path) if isinstance(cmd, click.Group) else [path]
    return out


COMMANDS = command_paths(cli)


def test_every_command_is_collected():
    assert {("clean",), ("check",), ("demo",), ("serve",), ("models", "build-int8")} <= set(COMMANDS)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_help_has_an_example_for_each_command(args):
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Example: shelfready {' '.join(args)}" in result.output


def test_models_list_shows_licences():
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0
    assert "u2netp" in result.output and "Apache-2.0" in result.output
    assert "efficientnet_lite0" in result.output


def test_check_reports_raw_photo_not_ready_and_bad_file(tmp_path, sample_paths):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    result = CliRunner().invoke(cli, ["check", str(sample_paths[0]), str(bad), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data[0]["ready"] is False and "white_background" in data[0]["failed"]
    assert "not an image" in data[1]["error"]


@pytest.mark.slow
def test_clean_then_check_ready(tmp_path, sample_paths):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_paths[7], src / "a.jpg")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["clean", str(src), str(out), "--preset", "ebay", "--size", "800",
                                 "--format", "png", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 cleaned" in result.output
    assert (out / "a.png").is_file()
    checked = runner.invoke(cli, ["check", str(out / "a.png"), "--preset", "ebay"])
    assert "white_background" in checked.output
    assert "ok   white_background" in checked.output and "ok   square" in checked.output


def test_clean_missing_input_folder_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["clean", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_build_int8_needs_photos(tmp_path):
    result = CliRunner().invoke(cli, ["models", "build-int8", str(tmp_path)])
    assert result.exit_code == 1
    assert "no .jpg/.png photos" in result.output
