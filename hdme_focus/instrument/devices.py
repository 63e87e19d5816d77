"""Open the configured stage and camera as one `Instrument` whose motion is guarded.

Procedures (sweep, autofocus, depth) receive an `Instrument` and move only
through `instrument.stage`, a `SafeStage` built from the config's soft limits,
maximum step, timeout and settling time. The raw driver stays reachable as
`raw_stage` for diagnostics, never for motion.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from hdme_focus.config import ConfigError, InstrumentConfig
from hdme_focus.core.frame import Frame
from hdme_focus.drivers.base import Camera, Clock, RealClock, SafeStage, Stage


@dataclass
class Instrument:
    """A guarded stage, a camera and the clock they share; a context manager.

    Leaving the `with` block by an exception (Ctrl-C included) stops the stage
    first; the devices are always closed.
    """

    stage: SafeStage
    camera: Camera
    clock: Clock
    config: InstrumentConfig
    raw_stage: Stage
    _closed: bool = dataclasses.field(default=False, repr=False)

    @property
    def frame_size_px(self) -> tuple[int, int]:
        """(width, height) the camera is configured to deliver."""
        return (self.config.camera.width_px, self.config.camera.height_px)

    def capture(self) -> Frame:
        """One frame, stamped with the stage's reported position in mm."""
        frame = self.camera.capture()
        position_mm = self.stage.position_mm()
        meta = dict(frame.meta)
        if math.isfinite(frame.position_mm) and frame.position_mm != position_mm:
            meta["camera_position_mm"] = frame.position_mm
        return dataclasses.replace(frame, position_mm=position_mm, meta=meta)

    def close(self) -> None:
        """Close camera and stage (idempotent); the stage is closed even if the camera fails."""
        if self._closed:
            return
        self._closed = True
        try:
            self.camera.close()
        finally:
            self.raw_stage.close()

    def __enter__(self) -> Instrument:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                self.stage.stop()
        finally:
            self.close()


# --------------------------------------------------------------------------- driver dispatch
# Hardware and replay engineers: add one opener per driver below, keyed by the
# config's `stage.driver` / `camera.driver` value. Import drivers inside the
# opener so a missing optional dependency only matters when that driver is used.

BenchOpener = Callable[[InstrumentConfig], tuple[Stage, Camera, Clock]]
StageOpener = Callable[[InstrumentConfig], Stage]
CameraOpener = Callable[[InstrumentConfig], Camera]


def _open_sim_bench(config: InstrumentConfig) -> tuple[Stage, Camera, Clock]:
    from hdme_focus.drivers.sim import open_sim

    stage, camera, clock = open_sim(config)
    return stage, camera, clock


def _open_replay_bench(config: InstrumentConfig) -> tuple[Stage, Camera, Clock]:
    from hdme_focus.drivers.sim.replay import open_replay

    stage, camera, clock = open_replay(config)
    return stage, camera, clock


# Drivers whose stage and camera come together and share a clock (the camera
# sees what the stage does): stage.driver and camera.driver must both name it.
BENCH_DRIVERS: dict[str, BenchOpener] = {
    "sim": _open_sim_bench,
    "replay": _open_replay_bench,
}


def _open_serial_stage(config: InstrumentConfig) -> Stage:
    from hdme_focus.drivers.hardware import open_hardware_stage

    return open_hardware_stage(config.stage)


def _open_hardware_camera(config: InstrumentConfig) -> Camera:
    from hdme_focus.drivers.hardware import open_hardware_camera

    return open_hardware_camera(config.camera)


def _open_sim_camera_on_stage(config: InstrumentConfig) -> tuple[Stage, Camera, Clock]:
    """A hardware (or emulated) stage with the simulated camera rendering at its position."""
    from hdme_focus.drivers.hardware import open_sim_camera_on

    stage = STAGE_DRIVERS[config.stage.driver](config)
    try:
        camera = open_sim_camera_on(config, stage)
    except BaseException:
        stage.close()
        raise
    return stage, camera, RealClock()


# Independent hardware: any stage with any camera, on the real clock.
STAGE_DRIVERS: dict[str, StageOpener] = {
    "gcode": _open_serial_stage,
    "zaber": _open_serial_stage,
    "apt": _open_serial_stage,
}
CAMERA_DRIVERS: dict[str, CameraOpener] = {
    "opencv": _open_hardware_camera,
    "genicam": _open_hardware_camera,
}


def _not_available(kind: str, driver: str, known: dict[str, Any]) -> ConfigError:
    choices = sorted(set(known) | set(BENCH_DRIVERS))
    return ConfigError(
        f"{kind}.driver = {driver!r}: driver not available in this build; "
        f"available: {', '.join(repr(c) for c in choices)}"
    )


def _open_devices(config: InstrumentConfig) -> tuple[Stage, Camera, Clock]:
    stage_driver, camera_driver = config.stage.driver, config.camera.driver
    if camera_driver == "sim" and stage_driver in STAGE_DRIVERS:
        return _open_sim_camera_on_stage(config)
    if stage_driver in BENCH_DRIVERS or camera_driver in BENCH_DRIVERS:
        if stage_driver != camera_driver:
            bench = stage_driver if stage_driver in BENCH_DRIVERS else camera_driver
            raise ConfigError(
                f"stage.driver = {stage_driver!r} with camera.driver = {camera_driver!r}: "
                f"the {bench!r} driver provides both; set both to {bench!r}"
            )
        return BENCH_DRIVERS[stage_driver](config)
    if stage_driver not in STAGE_DRIVERS:
        raise _not_available("stage", stage_driver, STAGE_DRIVERS)
    if camera_driver not in CAMERA_DRIVERS:
        raise _not_available("camera", camera_driver, CAMERA_DRIVERS)
    stage = STAGE_DRIVERS[stage_driver](config)
    try:
        camera = CAMERA_DRIVERS[camera_driver](config)
    except BaseException:
        stage.close()
        raise
    return stage, camera, RealClock()


def open_instrument(config: InstrumentConfig) -> Instrument:
    """Open the configured devices behind a SafeStage built from `config.stage`."""
    raw_stage, camera, clock = _open_devices(config)
    sc = config.stage
    safe = SafeStage(
        raw_stage,
        min_mm=sc.min_mm,
        max_mm=sc.max_mm,
        max_step_mm=sc.max_step_mm,
        move_timeout_s=sc.move_timeout_s,
        settle_s=sc.settle_s,
        clock=clock,
    )
    return Instrument(stage=safe, camera=camera, clock=clock, config=config, raw_stage=raw_stage)
