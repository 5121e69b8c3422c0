"""The `shelfready` command: one thin sub-command per verb over the library."""
from __future__ import annotations

import click

from .catalog_cmds import catalog_group, evaluate_cmd, search_cmd
from .clean_cmds import check, clean
from .dedup_cmd import dedup
from .demo_cmd import demo
from .models_cmds import models_group
from .serve_cmd import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shelfready")
def cli():
    """Get product photos ready for visual search: clean, check, measure."""


cli.add_command(clean)
cli.add_command(check)
cli.add_command(models_group, name="models")
cli.add_command(serve)
cli.add_command(catalog_group, name="catalog")
cli.add_command(search_cmd, name="search")
cli.add_command(evaluate_cmd, name="evaluate")
cli.add_command(demo)
cli.add_command(dedup)
