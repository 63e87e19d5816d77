"""What every command shares: consoles, options and their choices, errors to words, the loader.

Lower layers raise errors that say what is wrong in their own terms; this
module is the one place that turns them into the line a user reads (with the
flag to change) and the exit code of its kind (`hdme_focus.core.errors`).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import typer
from rich.console import Console

from hdme_focus.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    DeviceError,
    HdmeError,
    InterruptedBySignal,
    UsageError,
)
from hdme_focus.core.signals import signals_as_exceptions
from hdme_focus.estimation.devices import Device
from hdme_focus.estimation.registry import ALIASES, DEFAULT_ESTIMATOR

if TYPE_CHECKING:
    from hdme_focus.config import InstrumentConfig
    from hdme_focus.estimation.base import DefocusEstimator

console = Console()
err_console = Console(stderr=True)

# Earlier spellings of the default, still accepted on the command line.
DEFAULT_ALIASES = ("default", *ALIASES)

F = TypeVar("F", bound=Callable[..., Any])


class Method(StrEnum):
    """Autofocus method: single-capture HDME, or a classical search."""

    hdme = "hdme"
    brent = "brent"
    sweep = "sweep"


class Direction(StrEnum):
    """How HDME autofocus picks the side of focus."""

    auto = "auto"
    prior = "prior"
    probe = "probe"
    chroma = "chroma"


class Side(StrEnum):
    """Which side of the focused plane every object is assumed to lie on."""

    near = "near"
    far = "far"


ConfigOption: Any = typer.Option(
    None, "--config", "-c", help="Instrument file (TOML). Default: the simulated instrument."
)
EstimatorOption: Any = typer.Option(
    None,
    "--estimator",
    help=f"{DEFAULT_ESTIMATOR} (default; paths.weights when set), hdme-tiny (faster), "
    "hdme-lite-conf, patch-classifier, a weights file, or a baseline: reblur, "
    "focus-measure; append +refine for the guided refinement (e.g. reblur+refine).",
    show_default=False,
)
DeviceOption: Any = typer.Option(Device.AUTO, "--device", help="Estimator device.")


class UserError(UsageError):
    """A problem the user can fix; the message says the value and the fix."""


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def get_config(path: Path | None) -> InstrumentConfig:
    from hdme_focus.config import load_config  # pydantic + numpy: not for --help

    return load_config(path)


def _words(exc: HdmeError) -> str:
    """The line for an error: lower layers name values, the CLI names the flag to change."""
    from hdme_focus.drivers.base import MotionRefused
    from hdme_focus.records import OutputExistsError

    if isinstance(exc, OutputExistsError):
        return (
            f"--out {exc.directory}: already holds {exc.what}; "
            "choose another directory or pass --overwrite"
        )
    if isinstance(exc, DeviceError) and not isinstance(exc, MotionRefused):
        return f"device: {exc}"
    return str(exc)


def describe_error(exc: HdmeError) -> tuple[str, int]:
    """The line and exit code a command would end with (the `serve` replies use it too)."""
    return _words(exc), _exit_code(exc)


def _exit_code(exc: HdmeError) -> int:
    from hdme_focus.drivers.base import MotionRefused

    # a refused move is the user's target or limits, not a failing device
    return EXIT_USAGE if isinstance(exc, MotionRefused) else exc.exit_code


@overload
def handle_errors(func: F, *, moves_stage: bool = False) -> F: ...
@overload
def handle_errors(func: None = None, *, moves_stage: bool = False) -> Callable[[F], F]: ...


def handle_errors(func: F | None = None, *, moves_stage: bool = False) -> F | Callable[[F], F]:
    """Turn every user-fixable exception into one line and its kind's exit code.

    SIGTERM and SIGHUP are raised as `InterruptedBySignal` while the command
    runs, so they stop the stage and close the records exactly as Ctrl-C does,
    then end with one line and exit 128 + N. Only `moves_stage` commands say
    "stage stopped"; the others move nothing.
    """

    def decorate(f: F) -> F:
        @wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                with signals_as_exceptions():
                    return f(*args, **kwargs)
            except (typer.Exit, typer.Abort):
                raise
            except InterruptedBySignal as exc:
                raise _interrupted(exc.signal_name, exc.exit_code, moves_stage) from None
            except HdmeError as exc:
                raise fail(_words(exc), _exit_code(exc)) from None
            except FileNotFoundError as exc:
                raise fail(f"file not found: {exc.filename or exc}", EXIT_USAGE) from None
            except PermissionError as exc:
                where = exc.filename or exc
                raise fail(f"permission denied: {where}; choose a path you can write") from None
            except OSError as exc:  # a full disk, a vanished mount: the file and the reason
                where = f"{exc.filename}: " if exc.filename else ""
                raise fail(f"{where}{exc.strerror or exc}") from None
            except KeyboardInterrupt:
                raise _interrupted("Ctrl-C", EXIT_INTERRUPTED, moves_stage) from None

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _interrupted(what: str, code: int, moves_stage: bool) -> typer.Exit:
    done = (
        "stage stopped, records kept" if moves_stage else "finished outputs kept, none half-written"
    )
    err_console.print(f"[yellow]interrupted ({what}): {done}.[/]", highlight=False)
    return typer.Exit(code)


def load_estimator(
    name: str | None,
    device: Device | str = Device.AUTO,
    *,
    weights: Path | None = None,
    config: InstrumentConfig | None = None,
) -> DefocusEstimator:
    """The one estimator loader of every command.

    `name` None is the default estimator, or `paths.weights` when the
    instrument file sets it; `weights` is an explicit HDME-Net weights file.
    """
    from hdme_focus.estimation.registry import load_estimator as _load_weights

    label = str(weights) if weights is not None else (name or DEFAULT_ESTIMATOR)
    if weights is not None and name not in (None, DEFAULT_ESTIMATOR, *DEFAULT_ALIASES):
        raise UserError("--weights applies to hdme-net only; drop --estimator or --weights")
    target: str | Path | None = weights if weights is not None else name
    if target is None and config is not None and config.paths.weights is not None:
        target = config.paths.weights
    if target in (None, *DEFAULT_ALIASES):
        target = DEFAULT_ESTIMATOR
    device_name = device.value if isinstance(device, Device) else str(device)
    try:
        return _load_weights(target, device=device_name)
    except FileNotFoundError as exc:
        raise UserError(f"--estimator {label}: weights file not found: {exc}") from None
    except (ValueError, KeyError, LookupError) as exc:  # WeightsError is a ValueError
        raise UserError(f"--estimator {label}: {exc}") from None
