"""A simulated focus sweep whose truth is known: the sharp scene and where each region focuses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from hdme_focus.applications.stack import FocusStack, to_float01
from hdme_focus.config import CameraConfig, InstrumentConfig
from hdme_focus.drivers.sim import SimCamera, open_sim

SWEEP_MM = (
    0.8,
    1.0,
    1.2,
    1.4,
    1.6,
    1.8,
    2.0,
    2.2,
)  # letters: background 1.0, M 1.27, D 1.63, H 1.94


@dataclass
class SimSweep:
    stack: FocusStack
    camera: SimCamera


def record_sim_sweep(width_px: int, height_px: int, positions_mm: tuple[float, ...]) -> SimSweep:
    cfg = InstrumentConfig(camera=CameraConfig(width_px=width_px, height_px=height_px))
    stage, camera, _ = open_sim(cfg)
    images = []
    for p in positions_mm:
        stage.move_to(p)
        stage.wait(100.0)
        frame = camera.capture()
        images.append(to_float01(frame.image, frame.bit_depth))
    names = tuple(f"sim@{p:.1f}mm" for p in positions_mm)
    stack = FocusStack(tuple(images), names, np.asarray(positions_mm))  # type: ignore[arg-type]
    return SimSweep(stack, camera)


@pytest.fixture(scope="module")
def sim_sweep() -> SimSweep:
    return record_sim_sweep(240, 180, SWEEP_MM)
