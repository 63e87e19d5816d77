"""Open the configured stage and camera as one `Instrument` whose motion is guarded.

Procedures (sweep, autofocus, depth) receive an `Instrument` and move only
through `instrument.stage`, the `SafeStage` the driver registry built from the
config's soft limits, maximum step, timeouts and settling time. The raw driver stays reachable as
`raw_stage` for diagnostics, never for motion.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import TracebackType

from hdme_focus.config import InstrumentConfig
from hdme_focus.core.frame import Frame
from hdme_focus.drivers.base import Camera, Clock, SafeStage, Stage
from hdme_focus.drivers.registry import open_devices


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


def open_instrument(config: InstrumentConfig) -> Instrument:
    """Open the configured devices (through the driver registry) behind their SafeStage."""
    devices = open_devices(config)
    return Instrument(
        stage=devices.stage,
        camera=devices.camera,
        clock=devices.clock,
        config=config,
        raw_stage=devices.stage.stage,
    )
