"""Open the hardware a config names: serial stages, cameras, the sim camera on a real stage.

Drivers are imported only when used, so an optional extra (harvesters) matters
only to those who configure it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from hdme_focus.config import CameraConfig, InstrumentConfig, StageConfig
from hdme_focus.drivers.base import Camera, Clock, RealClock, Stage

SERIAL_STAGES = ("gcode", "zaber", "apt")
HARDWARE_CAMERAS = ("opencv", "genicam")


@runtime_checkable
class HomingStage(Stage, Protocol):
    """A stage that knows whether it is homed and can home (every serial driver)."""

    def is_homed(self) -> bool: ...

    def home(self, timeout_s: float | None = None) -> None: ...


def open_hardware_stage(cfg: StageConfig, *, allow_homing: bool = True) -> HomingStage:
    """Open a serial stage; with stage.home_on_connect, home it if it is not homed.

    `allow_homing=False` (e.g. `stage status`) never moves the axis.
    """
    stage: HomingStage
    if cfg.driver == "gcode":
        from hdme_focus.drivers.gcode import open_gcode_stage

        stage = open_gcode_stage(cfg)
    elif cfg.driver == "zaber":
        from hdme_focus.drivers.zaber import open_zaber_stage

        stage = open_zaber_stage(cfg)
    elif cfg.driver == "apt":
        from hdme_focus.drivers.apt import open_apt_stage

        stage = open_apt_stage(cfg)
    else:
        raise ValueError(f"not a serial stage driver: {cfg.driver!r}")
    if allow_homing and cfg.home_on_connect:
        try:
            if not stage.is_homed():
                stage.home(cfg.move_timeout_s)
        except BaseException:
            try:
                stage.stop()
            finally:
                stage.close()
            raise
    return stage


def open_hardware_camera(cfg: CameraConfig, clock: Clock | None = None) -> Camera:
    if cfg.driver == "opencv":
        from hdme_focus.drivers.opencv_camera import OpenCVCamera

        return OpenCVCamera(cfg, clock=clock)
    if cfg.driver == "genicam":
        from hdme_focus.drivers.genicam_camera import GenICamCamera

        return GenICamCamera(cfg, clock=clock)
    raise ValueError(f"not a hardware camera driver: {cfg.driver!r}")


def open_sim_camera_on(config: InstrumentConfig, stage: Stage) -> Camera:
    """The simulated camera rendering at a real (or emulated) stage's reported position.

    Lets sweep and autofocus run end to end over a real serial link with no camera.
    """
    from hdme_focus.drivers.sim import SimCamera
    from hdme_focus.drivers.sim.scenes import build_scene

    lens = config.optics.lens()
    cam = config.camera
    scene = build_scene(config.scene, cam.width_px, cam.height_px, lens)
    return SimCamera(cam, lens, scene, stage.position_mm, RealClock(), seed=cam.seed)
