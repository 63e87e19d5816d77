"""`hdme-focus stage status|home|move|stop` and `hdme-focus emulate gcode|zaber|apt`."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hdme_focus.cli.common import ConfigOption, UserError, console, get_config, handle_errors

if TYPE_CHECKING:  # drivers, emulators and the config models load with the command that uses them
    from hdme_focus.config import InstrumentConfig
    from hdme_focus.drivers.serial.emulators import PtyEmulator

stage_app = typer.Typer(
    help="Hands-on control of a hardware focus stage; every move passes SafeStage.",
    no_args_is_help=True,
)

EMULATED = ("gcode", "zaber", "apt")
ZABER_STEPS_PER_MM = 10000.0


@stage_app.command("status")
@handle_errors
def status(config: Path | None = ConfigOption) -> None:
    """Position, homed and moving state, and the configured guard. Never moves."""
    from hdme_focus.drivers.registry import open_stage, serial_stage_config

    cfg = get_config(config)
    sc = serial_stage_config(cfg.stage)
    with closing(open_stage(cfg, allow_homing=False)) as stage:
        position_mm = stage.position_mm()
        homed = stage.is_homed()
        moving = stage.is_moving()
    console.print(f"driver:      {sc.driver} on {sc.serial.port}", highlight=False)
    console.print(f"position:    {position_mm:.4f} mm", highlight=False)
    console.print(f"homed:       {'yes' if homed else 'no (run `hdme-focus stage home`)'}")
    console.print(f"moving:      {'yes' if moving else 'no'}")
    console.print(
        f"soft limits: [{sc.min_mm:g}, {sc.max_mm:g}] mm, max step {sc.max_step_mm:g} mm",
        highlight=False,
    )


@stage_app.command("home")
@handle_errors(moves_stage=True)
def home(config: Path | None = ConfigOption) -> None:
    """Run the controller's homing cycle (stopped on Ctrl-C, a signal or any error)."""
    from hdme_focus.drivers.registry import open_stage

    cfg = get_config(config)
    with closing(open_stage(cfg, allow_homing=False)) as stage:
        position_mm = stage.home()
    console.print(f"homed; position {position_mm:.4f} mm", highlight=False)


@stage_app.command("move", context_settings={"ignore_unknown_options": True})
@handle_errors(moves_stage=True)
def move(
    target_mm: float = typer.Argument(
        ..., metavar="MM", help="Absolute target, mm (negative is fine: `stage move -1.5`)."
    ),
    travel: bool = typer.Option(
        False, "--travel", help="Go in steps of at most stage.max_step_mm instead of refusing."
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Move to MM through SafeStage: refused outside the soft limits or beyond the max step."""
    from hdme_focus.drivers.registry import open_stage

    cfg = get_config(config)
    with closing(open_stage(cfg, allow_homing=True)) as stage:
        position_mm = stage.travel_to(target_mm) if travel else stage.move_to(target_mm)
    console.print(f"position {position_mm:.4f} mm", highlight=False)


@stage_app.command("stop")
@handle_errors
def stop(config: Path | None = ConfigOption) -> None:
    """Stop the axis now (a command running elsewhere holds the port: press Ctrl-C there)."""
    from hdme_focus.drivers.registry import open_stage

    cfg = get_config(config)
    with closing(open_stage(cfg, allow_homing=False)) as stage:
        stage.stop()
        position_mm = stage.position_mm()
    console.print(f"stopped; position {position_mm:.4f} mm", highlight=False)


# --------------------------------------------------------------------------- emulate


def emulator_config(kind: str, port: str, dialect: str, speed_mm_s: float) -> InstrumentConfig:
    """An instrument file for an emulated stage with the simulated camera."""
    from hdme_focus.config import InstrumentConfig

    stage: dict[str, object] = {
        "driver": kind,
        "serial": {"port": port, "timeout_s": 2.0},
        "min_mm": 0.0,
        "max_mm": 3.0,
        "max_step_mm": 1.0,
        "move_timeout_s": 30.0,
    }
    if kind == "gcode":
        stage |= {"dialect": dialect, "axis": "Z", "feed_mm_min": speed_mm_s * 60.0}
        if dialect == "marlin":
            stage["home_on_connect"] = True  # Marlin cannot tell whether it is homed
    elif kind == "zaber":
        stage |= {"axis": "1", "steps_per_mm": ZABER_STEPS_PER_MM}
    else:
        stage |= {"axis": "1", "steps_per_mm": 34304.0}
    return InstrumentConfig.model_validate({"stage": stage, "camera": {"driver": "sim"}})


def start_emulator(
    kind: str, dialect: str, start_mm: float, speed_mm_s: float, homed: bool
) -> PtyEmulator:
    from hdme_focus.drivers.serial.emulators import (
        AptEmulator,
        EmulatedAxis,
        GcodeEmulator,
        ZaberEmulator,
    )

    axis = EmulatedAxis(
        position_mm=start_mm, speed_mm_s=speed_mm_s, min_mm=-5.0, max_mm=25.0, homed=homed
    )
    if kind == "gcode":
        return GcodeEmulator(dialect, axis).start()
    if kind == "zaber":
        return ZaberEmulator(axis, steps_per_mm=ZABER_STEPS_PER_MM).start()
    return AptEmulator(axis).start()


@handle_errors
def emulate(
    kind: str = typer.Argument(..., help="Controller to emulate: gcode, zaber or apt."),
    dialect: str = typer.Option("grbl", "--dialect", help="gcode only: grbl or marlin."),
    write_config: Path | None = typer.Option(
        None, "--write-config", help="Write an instrument file for this port + the sim camera."
    ),
    start_mm: float = typer.Option(1.0, "--start-mm", help="Power-on position, mm."),
    speed_mm_s: float = typer.Option(2.0, "--speed", help="Axis speed, mm/s."),
    homed: bool = typer.Option(False, "--homed/--unhomed", help="Start homed or not."),
) -> None:
    """Serve an emulated stage controller on a pseudo-terminal until Ctrl-C.

    Every `stage` command, `sweep` and `autofocus` can then run over a real
    serial link without hardware (the simulated camera renders at the
    emulated axis's position).
    """
    if kind not in EMULATED:
        raise UserError(f"emulate {kind!r}: choose one of {', '.join(EMULATED)}")
    if dialect not in ("grbl", "marlin"):
        raise UserError(f"--dialect {dialect!r}: choose grbl or marlin")
    if not speed_mm_s > 0:
        raise UserError(f"--speed {speed_mm_s}: must be positive")
    emu = start_emulator(kind, dialect, start_mm, speed_mm_s, homed)
    try:
        label = f"{kind} ({dialect})" if kind == "gcode" else kind
        console.print(f"emulated {label} controller on {emu.port}", highlight=False)
        console.print(
            f"axis at {start_mm:g} mm, {speed_mm_s:g} mm/s, {'homed' if homed else 'not homed'}",
            highlight=False,
        )
        if write_config is not None:
            from hdme_focus.config import to_toml
            from hdme_focus.core.atomic import write_text_atomic

            cfg = emulator_config(kind, emu.port, dialect, speed_mm_s)
            write_text_atomic(write_config, to_toml(cfg))
            c = f"-c {write_config}"
            console.print(f"config written to {write_config}; try:", highlight=False)
            for line in (
                f"hdme-focus stage status {c}",
                f"hdme-focus stage home {c}",
                f"hdme-focus sweep {c} --step 0.1",
            ):
                console.print(f"  {line}", highlight=False)
        console.print("serving until Ctrl-C")
        while not emu.gone:
            time.sleep(0.2)
        console.print("the emulated device disconnected")
    except KeyboardInterrupt:
        console.print("emulator stopped")
    finally:
        emu.close()
