"""The `hdme-focus` Typer app: every command group registered here, explicitly.

Each command module defines plain (error-handled) functions and knows nothing
of the app; this is the one list of what the command line offers.
"""

from __future__ import annotations

import signal

import typer

from hdme_focus.cli import (
    applications_cmd,
    config_cmd,
    estimation_cmd,
    evaluate_cmd,
    focus_cmd,
    hardware_cmd,
    serve_cmd,
    sweep_cmd,
)

app = typer.Typer(
    name="hdme-focus",
    help="Focus a camera or microscope from a single frame (HDME-Net).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(config_cmd.config_app, name="config")
app.command("sweep")(sweep_cmd.sweep)
app.command("calibrate")(focus_cmd.calibrate_cmd)
app.command("autofocus")(focus_cmd.autofocus_cmd)
app.command("depth")(focus_cmd.depth_cmd)
app.command("demo")(focus_cmd.demo_cmd)
app.command("serve")(serve_cmd.serve_cmd)
app.command("train")(estimation_cmd.train_cmd)
app.command("estimate")(estimation_cmd.estimate_cmd)
app.command("evaluate")(evaluate_cmd.evaluate_cmd)
app.command("fuse")(applications_cmd.fuse_cmd)
app.command("magnify")(applications_cmd.magnify_cmd)
app.command("enhance")(applications_cmd.enhance_cmd)
app.add_typer(hardware_cmd.stage_app, name="stage")
app.command("emulate")(hardware_cmd.emulate)


def main() -> None:
    """Run the app; a SIGTERM/SIGHUP outside any command's work (argument parsing, the
    last prints) ends with one line and 128 + N too, and one during shut-down is
    ignored (the command has finished), never a silent kill."""
    from hdme_focus.cli.common import err_console
    from hdme_focus.core.errors import InterruptedBySignal
    from hdme_focus.core.signals import STOP_SIGNALS, signals_as_exceptions

    try:
        with signals_as_exceptions():
            app(prog_name="hdme-focus")
    except InterruptedBySignal as exc:
        err_console.print(
            f"[yellow]interrupted ({exc.signal_name}) outside a command's work; nothing "
            "was moving or half-written.[/]",
            highlight=False,
        )
        raise SystemExit(exc.exit_code) from None
    finally:
        # the work is done and the process is ending: a signal now (interpreter shut-down
        # can take a while) must not turn a finished command into a silent kill
        for sig in (*STOP_SIGNALS, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":  # pragma: no cover
    main()
