"""Shared fixtures: a small simulated bench that renders fast on a 2-core CPU."""

from __future__ import annotations

import pytest

from hdme_focus.config import CameraConfig, InstrumentConfig
from hdme_focus.drivers.sim import SimCamera, SimClock, SimStage, open_sim


@pytest.fixture
def small_config() -> InstrumentConfig:
    """Default simulated instrument (letters scene) at 160 x 120 px."""
    return InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))


@pytest.fixture
def sim_bench(small_config: InstrumentConfig) -> tuple[SimStage, SimCamera, SimClock]:
    return open_sim(small_config)
