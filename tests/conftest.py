"""Shared fixtures: a small simulated bench that renders fast on a 2-core CPU, and one
bench calibrated with the shipped model for the slow end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hdme_focus.calibration.model import Calibration
from hdme_focus.config import CameraConfig, InstrumentConfig
from hdme_focus.drivers.sim import SimCamera, SimClock, SimStage, open_sim
from hdme_focus.estimation.base import DefocusEstimator


@pytest.fixture
def small_config() -> InstrumentConfig:
    """Default simulated instrument (letters scene) at 160 x 120 px."""
    return InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))


@pytest.fixture
def sim_bench(small_config: InstrumentConfig) -> tuple[SimStage, SimCamera, SimClock]:
    return open_sim(small_config)


@dataclass(frozen=True)
class ShippedBench:
    """A simulated bench calibrated once with the shipped model (see `shipped_bench`)."""

    config: InstrumentConfig
    estimator: DefocusEstimator
    calibration: Calibration


@pytest.fixture(scope="session")
def shipped_bench(tmp_path_factory: pytest.TempPathFactory) -> ShippedBench:
    """One sweep with the shipped model, calibrated once, shared by the slow autofocus tests.

    The sweep and its calibration are the expensive part (tens of seconds on 2
    cores); each test opens a fresh instrument of the same config to focus.
    """
    from hdme_focus.estimation.estimator import default_weights_path, load_estimator
    from hdme_focus.instrument.calibrate import calibrate_sweep
    from hdme_focus.instrument.devices import open_instrument
    from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep

    if not default_weights_path().is_file():
        pytest.skip("shipped weights not installed")
    est = load_estimator(None, device="cpu")
    cfg = InstrumentConfig(camera=CameraConfig(width_px=256, height_px=192))
    sweep_dir = tmp_path_factory.mktemp("shipped") / "sweep"
    with open_instrument(cfg) as inst:
        rois = {"background": default_rois(inst)["background"]}
        run_sweep(inst, plan_positions(0.4, 1.6, 0.05), rois, sweep_dir, estimator=est)
    return ShippedBench(cfg, est, calibrate_sweep(sweep_dir, est).calibration)
