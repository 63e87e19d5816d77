"""The `hdme-focus` command line: parse, call one function, print. No logic here.

Each command group lives in its own module and registers itself on `app`.
User-fixable errors (config, input files, ROI, device refusals) end as one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from hdme_focus.config import ConfigError, InstrumentConfig, load_config

app = typer.Typer(
    name="hdme-focus",
    help="Focus a camera or microscope from a single frame (HDME-Net).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_USAGE = 2  # bad config, bad arguments, bad input files
EXIT_DEVICE = 3  # the hardware refused or failed
EXIT_INTERRUPTED = 130

ConfigOption = typer.Option(
    None, "--config", "-c", help="Instrument file (TOML). Default: the simulated instrument."
)

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem the user can fix; the message says the value and the fix."""

    exit_code = EXIT_USAGE


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def get_config(path: Path | None) -> InstrumentConfig:
    return load_config(path)


def handle_errors(func: F) -> F:
    """Turn every user-fixable exception into one line and an exit code."""
    from hdme_focus.drivers.base import DeviceError, MotionRefused

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (ConfigError, UserError) as exc:
            raise fail(str(exc), getattr(exc, "exit_code", EXIT_USAGE)) from None
        except MotionRefused as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        except DeviceError as exc:
            raise fail(f"device: {exc}", EXIT_DEVICE) from None
        except FileNotFoundError as exc:
            raise fail(f"file not found: {exc.filename or exc}", EXIT_USAGE) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted: stage stopped, records kept.[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _register() -> None:
    """Import command modules so they attach to `app` (each is optional while building)."""
    import importlib

    for name in (
        "config_cmd",
        "sweep_cmd",
        "estimation_cmd",
        "focus_cmd",
        "hardware_cmd",
        "evaluate_cmd",
        "applications_cmd",
    ):
        try:
            importlib.import_module(f"hdme_focus.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hdme_focus.cli.{name}":
                raise


def main() -> None:
    _register()
    app(prog_name="hdme-focus")


if __name__ == "__main__":  # pragma: no cover
    main()
