"""`hdme-focus config show|check`."""

from __future__ import annotations

from pathlib import Path

import typer

from hdme_focus.cli.common import ConfigOption, console, get_config, handle_errors

config_app = typer.Typer(help="Show or validate the instrument file.", no_args_is_help=True)


@config_app.command("show")
@handle_errors
def show(config: Path | None = ConfigOption) -> None:
    """Print the effective configuration as TOML (defaults filled in)."""
    from hdme_focus.config import to_toml

    console.print(to_toml(get_config(config)), markup=False, highlight=False)


@config_app.command("check")
@handle_errors
def check(file: Path = typer.Argument(..., help="Instrument file to validate.")) -> None:
    """Validate FILE; exit 2 with one line naming the bad field if it is wrong."""
    from hdme_focus.config import load_config

    load_config(file)
    console.print(f"{file}: ok")
