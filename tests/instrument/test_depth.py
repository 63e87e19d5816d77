"""Depth from one frame: object distances through the calibration, masks, files, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from sim_oracle import OracleEstimator, truth_calibration
from typer.testing import CliRunner

from hdme_focus.calibration.model import Calibration
from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, InstrumentConfig
from hdme_focus.estimation.base import UNINFORMED_SHARE, DefocusEstimate, confidence_from_scale
from hdme_focus.instrument.depth import depth_from_frame, measure_depth, write_depth
from hdme_focus.instrument.devices import Instrument, open_instrument

runner = CliRunner()


@pytest.fixture
def inst() -> Any:
    with open_instrument(InstrumentConfig(camera=CameraConfig(width_px=192, height_px=144))) as i:
        yield i


@pytest.fixture
def cal(inst: Instrument) -> Calibration:
    return truth_calibration(inst)


@pytest.mark.parametrize(("position_mm", "side"), [(0.85, "near"), (2.1, "far")])
def test_object_distance_matches_the_scene(
    inst: Instrument, cal: Calibration, position_mm: float, side: str
) -> None:
    """Letters scene: 900..1300 mm, focused at 1.0..1.94 mm; all on one side of 0.85 or 2.1."""
    inst.stage.travel_to(position_mm)
    moves = inst.stage.moves
    maps = measure_depth(inst, OracleEstimator(inst.camera), cal, side)  # type: ignore[arg-type]
    assert inst.stage.moves == moves  # depth never moves the stage
    truth = inst.camera.true_distance_mm()  # type: ignore[attr-defined]
    ok = maps.confident
    assert ok.mean() > 0.5
    rel = np.abs(maps.object_distance_mm[ok] - truth[ok]) / truth[ok]
    assert np.median(rel) < 0.005 and np.percentile(rel, 95) < 0.02
    assert np.all(np.isnan(maps.object_distance_mm[~ok]))
    assert maps.device_time_s > 0


def test_the_wrong_side_gives_wrong_distances(inst: Instrument, cal: Calibration) -> None:
    """The one-sided assumption matters: stated wrongly, distances are far off."""
    inst.stage.travel_to(0.85)
    frame = inst.capture()
    est = OracleEstimator(inst.camera)  # type: ignore[arg-type]
    right = depth_from_frame(frame, est, cal, "near", 0.85)
    wrong = depth_from_frame(frame, est, cal, "far", 0.85)
    truth = inst.camera.true_distance_mm()  # type: ignore[attr-defined]
    ok = right.confident & wrong.confident
    err_right = np.median(np.abs(right.object_distance_mm[ok] - truth[ok]))
    err_wrong = np.median(np.abs(wrong.object_distance_mm[ok] - truth[ok]))
    assert err_wrong > 20 * err_right


def test_out_of_range_blur_is_masked(inst: Instrument, cal: Calibration) -> None:
    inst.stage.travel_to(0.2)  # H focuses at 1.94 mm: ~14 px of blur, beyond a 10 px range
    frame = inst.capture()
    est = OracleEstimator(inst.camera, sigma_max_px=10.0)  # type: ignore[arg-type]
    maps = depth_from_frame(frame, est, cal, "near")
    assert not maps.confident[maps.sigma_px >= 9.5].any()


class _HalfSure(OracleEstimator):
    """The true blur, with a learned confidence that it cannot read the frame's left half."""

    sigma_max_px = 10.0  # a network's range: its know-nothing error is finite

    def estimate(self, image: Any, bit_depth: int | None = None, **kw: Any) -> DefocusEstimate:
        sigma = self.predict(image, bit_depth, **kw)
        scale = np.full(sigma.shape, 0.3, np.float32)
        scale[:, : sigma.shape[1] // 2] = 0.95 * UNINFORMED_SHARE * self.sigma_max_px
        return DefocusEstimate(sigma, confidence_from_scale(scale, self.sigma_max_px), scale)


def test_a_learned_confidence_masks_what_the_estimator_cannot_read(
    inst: Instrument, cal: Calibration
) -> None:
    inst.stage.travel_to(0.85)
    frame = inst.capture()
    maps = depth_from_frame(frame, _HalfSure(inst.camera), cal, "near")  # type: ignore[arg-type]
    half = frame.image.shape[1] // 2
    assert not maps.confident[:, :half].any()
    assert maps.confident[:, half:].mean() > 0.5


def test_files_are_float32_tiffs_png_and_ply(
    inst: Instrument, cal: Calibration, tmp_path: Path
) -> None:
    inst.stage.travel_to(0.85)
    maps = measure_depth(inst, OracleEstimator(inst.camera), cal, "near")  # type: ignore[arg-type]
    files = write_depth(maps, tmp_path, ply=True, calibration=cal)
    for kind in ("sigma_px", "defocus_mm", "focus_position_mm", "object_distance_mm"):
        data = tifffile.imread(files[kind])
        assert data.dtype == np.float32 and data.shape == (144, 192), kind
    u = tifffile.imread(files["object_distance_mm"])
    mask = tifffile.imread(files["confidence"]) > 0
    assert np.all(np.isfinite(u[mask])) and np.all(np.isnan(u[~mask]))
    assert Path(files["png"]).stat().st_size > 5000
    text = Path(files["ply"]).read_text().splitlines()
    n = int(next(line for line in text if line.startswith("element vertex")).split()[-1])
    body = text[text.index("end_header") + 1 :]
    assert n == len(body) == int(mask.sum())
    z = np.array([float(line.split()[2]) for line in body])
    assert 850 < np.median(z) < 1350  # millimetres from the lens


def test_cli_depth_rejects_an_unknown_side() -> None:
    result = runner.invoke(app, ["depth", "--side", "left"])
    assert result.exit_code == 2
    assert "'--side'" in result.stderr and "'left' is not one of 'near', 'far'" in result.stderr
