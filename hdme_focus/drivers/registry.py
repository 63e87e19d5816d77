"""Driver name -> config model and constructor, in one place; every stage comes back guarded.

`open_devices` is the one way to open what an instrument file names. The stage
it returns is a `SafeStage` built from the config's soft limits, step size and
timeouts, and homing on connect runs through that guard, so even the first
motion after the port opens stops on an error, Ctrl-C or a signal.

Drivers are imported only when used, so an optional extra (harvesters) matters
only to those who configure it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hdme_focus.config import (
    STAGE_MODELS,
    AptStageConfig,
    CameraConfig,
    ConfigError,
    GcodeStageConfig,
    InstrumentConfig,
    SerialStageConfig,
    StageConfig,
    ZaberStageConfig,
)
from hdme_focus.drivers.base import Camera, Clock, HomingStage, RealClock, SafeStage, Stage

BenchOpener = Callable[[InstrumentConfig], tuple[Stage, Camera, Clock]]
SerialOpener = Callable[[Any], HomingStage]
CameraOpener = Callable[[CameraConfig], Camera]


def _open_sim(config: InstrumentConfig) -> tuple[Stage, Camera, Clock]:
    from hdme_focus.drivers.sim import open_sim

    return open_sim(config)


def _open_replay(config: InstrumentConfig) -> tuple[Stage, Camera, Clock]:
    from hdme_focus.drivers.sim.replay import open_replay

    return open_replay(config)


def _open_gcode(cfg: GcodeStageConfig) -> HomingStage:
    from hdme_focus.drivers.serial.gcode import open_gcode_stage

    return open_gcode_stage(cfg)


def _open_zaber(cfg: ZaberStageConfig) -> HomingStage:
    from hdme_focus.drivers.serial.zaber import open_zaber_stage

    return open_zaber_stage(cfg)


def _open_apt(cfg: AptStageConfig) -> HomingStage:
    from hdme_focus.drivers.serial.apt import open_apt_stage

    return open_apt_stage(cfg)


def _open_opencv(cfg: CameraConfig) -> Camera:
    from hdme_focus.drivers.cameras.opencv import OpenCVCamera

    return OpenCVCamera(cfg)


def _open_genicam(cfg: CameraConfig) -> Camera:
    from hdme_focus.drivers.cameras.genicam import GenICamCamera

    return GenICamCamera(cfg)


# Stage and camera in one, sharing a clock (the camera sees what the stage
# does): stage.driver and camera.driver must both name it.
BENCHES: dict[str, BenchOpener] = {"sim": _open_sim, "replay": _open_replay}
# Serial stages, with any camera (the simulated one renders at their position).
SERIAL_STAGES: dict[str, SerialOpener] = {
    "gcode": _open_gcode,
    "zaber": _open_zaber,
    "apt": _open_apt,
}
HARDWARE_CAMERAS: dict[str, CameraOpener] = {"opencv": _open_opencv, "genicam": _open_genicam}
assert set(STAGE_MODELS) == set(BENCHES) | set(SERIAL_STAGES), "config and registry disagree"


@dataclass
class Devices:
    """What `open_devices` returns: the guarded stage, the camera and their clock."""

    stage: SafeStage
    camera: Camera
    clock: Clock


def guard(stage: Stage, cfg: StageConfig, clock: Clock | None = None) -> SafeStage:
    """The SafeStage a stage config asks for (the one place it is built)."""
    return SafeStage(
        stage,
        min_mm=cfg.min_mm,
        max_mm=cfg.max_mm,
        max_step_mm=cfg.max_step_mm,
        move_timeout_s=cfg.move_timeout_s,
        settle_s=cfg.settle_s,
        clock=clock,
        home_timeout_s=(
            cfg.home_timeout_s
            if isinstance(cfg, GcodeStageConfig | ZaberStageConfig | AptStageConfig)
            else cfg.move_timeout_s  # simulated and replayed stages home instantly
        ),
    )


def open_serial_stage(cfg: SerialStageConfig, *, allow_homing: bool = True) -> SafeStage:
    """Open a serial stage behind its guard; with stage.home_on_connect, home it if needed.

    `allow_homing=False` (e.g. `stage status`) never moves the axis.
    """
    safe = guard(SERIAL_STAGES[cfg.driver](cfg), cfg)
    if allow_homing and cfg.home_on_connect:
        try:
            if not safe.is_homed():
                safe.home()
        except BaseException:
            safe.close()
            raise
    return safe


def serial_stage_config(cfg: StageConfig) -> SerialStageConfig:
    """The stage config narrowed to a serial driver, or a ConfigError that says what to do."""
    if not isinstance(cfg, GcodeStageConfig | ZaberStageConfig | AptStageConfig):
        raise ConfigError(
            f"stage.driver = {cfg.driver!r}: this needs a hardware stage "
            f"({', '.join(SERIAL_STAGES)}); to try it without hardware run "
            "`hdme-focus emulate gcode --write-config emu.toml`, then use `-c emu.toml`"
        )
    return cfg


def open_stage(config: InstrumentConfig, *, allow_homing: bool = True) -> SafeStage:
    """The configured hardware stage alone (the `stage` commands), guarded."""
    return open_serial_stage(serial_stage_config(config.stage), allow_homing=allow_homing)


def _sim_camera_on(config: InstrumentConfig, stage: Stage) -> Camera:
    """The simulated camera rendering at a hardware (or emulated) stage's reported position.

    Lets sweep and autofocus run end to end over a real serial link with no camera.
    """
    from hdme_focus.drivers.sim import SimCamera
    from hdme_focus.drivers.sim.scenes import build_scene

    lens = config.optics.lens()
    cam = config.camera
    scene = build_scene(config.scene, cam.width_px, cam.height_px, lens)
    return SimCamera(cam, lens, scene, stage.position_mm, RealClock(), seed=cam.seed)


def _not_available(kind: str, driver: str, known: dict[str, Any]) -> ConfigError:
    choices = sorted(set(known) | set(BENCHES))
    return ConfigError(
        f"{kind}.driver = {driver!r}: driver not available in this build; "
        f"available: {', '.join(repr(c) for c in choices)}"
    )


def open_devices(config: InstrumentConfig) -> Devices:
    """Open the stage and camera an instrument file names; the stage behind its SafeStage."""
    stage_driver, camera_driver = config.stage.driver, config.camera.driver
    if stage_driver in BENCHES or (camera_driver in BENCHES and camera_driver != "sim"):
        if stage_driver != camera_driver:
            bench = stage_driver if stage_driver in BENCHES else camera_driver
            raise ConfigError(
                f"stage.driver = {stage_driver!r} with camera.driver = {camera_driver!r}: "
                f"the {bench!r} driver provides both; set both to {bench!r}"
            )
        raw, camera, clock = BENCHES[stage_driver](config)
        return Devices(guard(raw, config.stage, clock), camera, clock)
    safe = open_stage(config)
    try:
        if camera_driver == "sim":
            camera = _sim_camera_on(config, safe.stage)
        elif camera_driver in HARDWARE_CAMERAS:
            camera = HARDWARE_CAMERAS[camera_driver](config.camera)
        else:
            raise _not_available("camera", camera_driver, HARDWARE_CAMERAS)
    except BaseException:
        with contextlib.suppress(Exception):
            safe.close()
        raise
    return Devices(safe, camera, RealClock())
