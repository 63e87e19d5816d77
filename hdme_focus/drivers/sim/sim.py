"""The simulated instrument: a stage with finite speed and a camera that renders a scene.

Honest enough that results on it mean something: the camera blurs each scene
layer by its thin-lens sigma at the stage's true position (occlusion-aware),
then adds shot and read noise, exposure, saturation and quantisation. Time is
simulated (`SimClock`), so a sweep of many moves runs in milliseconds.

Colour: with `optics.axial_chromatic_mm` non-zero the camera renders an RGB
frame (HxWx3, red, green, blue), each channel blurred by the thin-lens sigma at
that channel's focal length (`ThinLens.channel_lenses`), with its own shot and
read noise, as a 3-chip camera would (no Bayer mosaic, no compression). The
scene's gray radiance serves every channel. Off (the default) the frame is gray
as before; ground truth (`true_sigma_px`, `focus_position_mm`) is the nominal
(green) lens either way.

Reported vs true position: like an open-loop stepper, `SimStage.position_mm()`
reports the commanded (motor) position; the carriage, which the camera sees
(`true_position_mm()`), lags by the backlash after a reversal and lands with
`position_noise_mm` scatter. Frames carry the true position they were rendered
at in `Frame.position_mm` (and meta["true_position_mm"]); procedures should
record the position the stage reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hdme_focus.config import CameraConfig, ConfigError, InstrumentConfig, SimStageConfig
from hdme_focus.core.frame import Frame
from hdme_focus.drivers.base import CameraError, Clock, StageFault, StageTimeout
from hdme_focus.drivers.sim.scenes import Scene, build_scene
from hdme_focus.optics import ThinLens
from hdme_focus.render import Layer, composite_layers, quantize, sensor_noise, visible_sigma

F32 = NDArray[np.float32]


class SimClock:
    """Simulated time: `sleep` advances it instantly."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = float(start_s)

    def monotonic(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._now += float(seconds)


class SimStage:
    """One focus axis in simulated time: constant speed, backlash, landing noise, faults.

    A move is a straight segment of the motor from its position to the target
    at `speed_mm_s`; positions are evaluated at the clock's current time, so a
    stage that nobody waits for is still moving. The carriage follows the motor
    through a play of width `backlash_mm` (it is pushed from below: moving up
    it sits at the motor, moving down it lags backlash_mm above it).
    """

    def __init__(self, config: SimStageConfig, clock: SimClock, seed: int | None = 0) -> None:
        self.config = config
        self.clock = clock
        self.speed_mm_s = float(config.speed_mm_s)
        self.backlash_mm = float(config.backlash_mm)
        self.position_noise_mm = float(config.position_noise_mm)
        self._rng = np.random.default_rng(seed)
        start = float(config.start_mm)
        now = clock.monotonic()
        # current segment: motor from _m0 (time _t0) to _m1 (time _t1)
        self._m0 = self._m1 = start
        self._t0 = self._t1 = now
        self._carriage0 = start  # play-operator state at the segment start (noise-free)
        self._eps0 = self._eps1 = 0.0  # landing error at segment start / end
        self._closed = False
        # fault injection (tests): raised once, mid-move, from move_to or wait
        self.fault_on_next_move: BaseException | None = None
        self.fault_in: Literal["move_to", "wait"] = "wait"
        # counters
        self.moves = 0
        self.stopped = 0
        self.history: list[float] = []

    # -- state at the current simulated time
    def _frac(self) -> float:
        if self._t1 <= self._t0:
            return 1.0
        return min(1.0, max(0.0, (self.clock.monotonic() - self._t0) / (self._t1 - self._t0)))

    def _motor(self) -> float:
        return self._m0 + (self._m1 - self._m0) * self._frac()

    def _carriage(self) -> float:
        m = self._motor()
        return min(max(self._carriage0, m), m + self.backlash_mm)

    def _eps(self) -> float:
        return self._eps0 + (self._eps1 - self._eps0) * self._frac()

    def position_mm(self) -> float:
        """Reported (commanded motor) position."""
        return self._motor()

    def true_position_mm(self) -> float:
        """Where the carriage really is: backlash and landing error included."""
        return self._carriage() + self._eps()

    def is_moving(self) -> bool:
        return self.clock.monotonic() < self._t1

    # -- motion
    def _halt(self) -> None:
        m, c, e, now = self._motor(), self._carriage(), self._eps(), self.clock.monotonic()
        self._m0 = self._m1 = m
        self._carriage0 = c
        self._eps0 = self._eps1 = e
        self._t0 = self._t1 = now

    def move_to(self, target_mm: float) -> None:
        if self._closed:
            raise StageFault("simulated stage is closed")
        target_mm = float(target_mm)
        if not math.isfinite(target_mm):
            raise StageFault(f"simulated stage: cannot move to {target_mm!r}")
        self._halt()  # a new command replaces a move in progress
        self.history.append(target_mm)
        self.moves += 1
        self._m1 = target_mm
        self._t1 = self._t0 + abs(target_mm - self._m0) / self.speed_mm_s
        if self.position_noise_mm > 0:
            self._eps1 = float(self._rng.normal(0.0, self.position_noise_mm))
        if self.fault_on_next_move is not None and self.fault_in == "move_to":
            fault, self.fault_on_next_move = self.fault_on_next_move, None
            raise fault

    def wait(self, timeout_s: float) -> None:
        """Advance the clock to the end of the move; past timeout_s, stop and raise StageTimeout."""
        remaining = max(0.0, self._t1 - self.clock.monotonic())
        if self.fault_on_next_move is not None and self.fault_in == "wait":
            fault, self.fault_on_next_move = self.fault_on_next_move, None
            self.clock.sleep(min(remaining / 2.0, timeout_s))
            raise fault
        if remaining > timeout_s:
            target_mm = self._m1
            self.clock.sleep(timeout_s)
            self.stop()
            raise StageTimeout(
                f"simulated stage: move to {target_mm:.4f} mm needs {remaining:.3f} s, "
                f"more than the {timeout_s:.3f} s timeout; stopped at {self.position_mm():.4f} mm"
            )
        self.clock.sleep(remaining)

    def stop(self) -> None:
        """Halt where the stage is now (safe when idle)."""
        self.stopped += 1
        self._halt()

    def close(self) -> None:
        self._halt()  # not counted in `stopped`, which counts stop() calls
        self._closed = True

    def reseed(self, seed: int) -> None:
        """Restart the landing-error stream (paired trials: see `SimCamera.reseed`)."""
        self._rng = np.random.default_rng(seed)


class SimCamera:
    """Renders the scene through the thin lens at `position_source()` and adds sensor noise."""

    def __init__(
        self,
        config: CameraConfig,
        lens: ThinLens,
        scene: Scene,
        position_source: Callable[[], float],
        clock: Clock,
        seed: int | None = 0,
    ) -> None:
        expected = (config.height_px, config.width_px)
        if scene.shape != expected:
            raise ValueError(
                f"scene is {scene.shape[1]}x{scene.shape[0]} px but the camera is "
                f"{config.width_px}x{config.height_px}; build the scene at the camera's size"
            )
        self.config = config
        self.lens = lens
        self.scene = scene
        self.position_source = position_source
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        self._visible_distance_mm = scene.visible_distance_mm()
        self._closed = False
        self.frames = 0

    def _layers(self, position_mm: float, lens: ThinLens | None = None) -> list[Layer]:
        through = self.lens if lens is None else lens
        return [
            Layer(
                layer.radiance,
                layer.alpha,
                through.sigma_px(position_mm, layer.distance_mm).astype(np.float32),
            )
            for layer in self.scene.layers
        ]

    def render(self, position_mm: float) -> F32:
        """Noise-free scene radiance in [0, 1] as the lens images it at a stage position.

        HxW, or HxWx3 (red, green, blue) through a lens with axial chromatic aberration.
        """
        if not self.lens.chromatic:
            return composite_layers(self._layers(position_mm))
        planes = [
            composite_layers(self._layers(position_mm, c)) for c in self.lens.channel_lenses()
        ]
        return np.stack(planes, axis=-1)

    def capture(self) -> Frame:
        if self._closed:
            raise CameraError("simulated camera is closed")
        cfg = self.config
        started_s = self.clock.monotonic()
        position_mm = float(self.position_source())
        radiance = self.render(position_mm)
        signal = sensor_noise(
            radiance,
            self._rng,
            full_well_e=cfg.full_well_e,
            exposure_scale=cfg.exposure_ms * cfg.photon_flux_e_per_ms / cfg.full_well_e,
            read_noise_e=cfg.read_noise_e,
        )
        # the well saturates first, then gain scales what the ADC (quantize) clips
        image = quantize(np.minimum(signal, 1.0) * cfg.gain, cfg.bit_depth)
        self.clock.sleep(cfg.exposure_ms / 1000.0)
        self.frames += 1
        return Frame(
            image=image,
            exposure_ms=cfg.exposure_ms,
            timestamp_s=started_s,
            position_mm=position_mm,
            bit_depth=cfg.bit_depth,
            meta={"camera": "sim", "scene": self.scene.name, "true_position_mm": position_mm},
        )

    def true_sigma_px(self, position_mm: float | None = None) -> F32:
        """Ground-truth blur of the visible surface per pixel (default: at the current position)."""
        pos = float(self.position_source()) if position_mm is None else float(position_mm)
        return visible_sigma(self._layers(pos))

    def true_distance_mm(self) -> F32:
        """Object distance u_scene of the visible surface per pixel."""
        return self._visible_distance_mm.copy()

    def focus_position_mm(self, roi: tuple[int, int, int, int]) -> float:
        """Stage position that focuses the ROI's visible surface (its median distance)."""
        x, y, w, h = (int(v) for v in roi)
        height, width = self.scene.shape
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise ValueError(f"ROI {roi} is not inside the {width}x{height} frame")
        median_mm = float(np.median(self._visible_distance_mm[y : y + h, x : x + w]))
        return float(self.lens.focus_position_mm(median_mm))

    def reseed(self, seed: int) -> None:
        """Restart the noise stream, so that several methods run from one start see the
        same noise capture by capture: their comparison is then paired, not a matter of
        how many frames the method before happened to take."""
        self._rng = np.random.default_rng(seed)

    def close(self) -> None:
        self._closed = True


def open_sim(config: InstrumentConfig) -> tuple[SimStage, SimCamera, SimClock]:
    """The simulated stage and camera sharing one simulated clock, as the config describes."""
    clock = SimClock()
    lens = config.optics.lens()
    seed = config.camera.seed
    if not isinstance(config.stage, SimStageConfig):
        raise ConfigError(f"stage.driver = {config.stage.driver!r}: open_sim needs the 'sim' stage")
    stage = SimStage(config.stage, clock, seed=seed)
    scene = build_scene(config.scene, config.camera.width_px, config.camera.height_px, lens)
    camera = SimCamera(config.camera, lens, scene, stage.true_position_mm, clock, seed=seed)
    return stage, camera, clock
