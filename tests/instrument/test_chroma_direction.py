"""--direction chroma: the sign convention from the sweep, one capture, and the fallback."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hdme_focus.calibration.model import Calibration
from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, InstrumentConfig, OpticsConfig, SimStageConfig, to_toml
from hdme_focus.core.roi import Roi
from hdme_focus.estimation import load_estimator
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.estimation.chroma import ChromaCue
from hdme_focus.instrument.autofocus import HdmeOptions, autofocus_hdme
from hdme_focus.instrument.calibrate import calibrate_sweep
from hdme_focus.instrument.chroma_direction import (
    ChromaConvention,
    calibrate_chroma,
    convention_path,
    load_or_calibrate_chroma,
)
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.records import load_sweep

AXIAL_MM = 0.25
ESTIMATOR = "focus-measure"  # fast, and enough to calibrate the small bench


def _config(axial_mm: float, start_mm: float = 1.0) -> InstrumentConfig:
    return InstrumentConfig(
        stage=SimStageConfig(start_mm=start_mm),
        camera=CameraConfig(width_px=160, height_px=120),
        optics=OpticsConfig(axial_chromatic_mm=axial_mm),
    )


@dataclass(frozen=True)
class ChromaBench:
    sweep_dir: Path
    calibration_path: Path
    calibration: Calibration
    estimator: DefocusEstimator


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> ChromaBench:
    """A sweep of the colour bench (lens with axial colour), calibrated once."""
    root = tmp_path_factory.mktemp("chroma")
    est = load_estimator(ESTIMATOR, device="cpu")
    with open_instrument(_config(AXIAL_MM)) as inst:
        run_sweep(
            inst, plan_positions(0.4, 2.4, 0.1), default_rois(inst), root / "sweep", estimator=est
        )
    cal = calibrate_sweep(root / "sweep", est).calibration
    path = cal.save(root / "calibration.json")
    return ChromaBench(root / "sweep", path, cal, est)


def test_sweep_gives_the_sign_convention(bench: ChromaBench) -> None:
    # f_red > f_blue on the image side: red focuses behind blue, so above focus red is sharper
    conv = calibrate_chroma(load_sweep(bench.sweep_dir), bench.calibration)
    assert conv.red_sharper_above is True, conv.reason
    assert conv.agreement >= 0.9
    assert conv.votes >= 3


def test_side_follows_the_convention() -> None:
    red = ChromaCue(3.0, 0.01, 5.0)
    blue = ChromaCue(-3.0, 0.01, 5.0)
    silent = ChromaCue(0.5, 0.01, 1.0, "weak")
    normal = ChromaConvention(True, 10, 1.0, 10, "t")
    reversed_ = ChromaConvention(False, 10, 1.0, 10, "t")
    assert normal.side(red) == -1 and normal.side(blue) == 1  # red sharper: focus below
    assert reversed_.side(red) == 1 and reversed_.side(blue) == -1
    assert normal.side(silent) == 0
    assert ChromaConvention(None, 0, math.nan, 0, "t", "none").side(red) == 0


def _regions(bench: ChromaBench) -> list[tuple[Roi, float]]:
    return [(Roi(*r.roi), r.z0_mm) for r in bench.calibration.rois if r.roi is not None]


@pytest.mark.parametrize("offset_mm", [-0.5, 0.5])
def test_chroma_picks_the_side_from_one_capture(bench: ChromaBench, offset_mm: float) -> None:
    conv = calibrate_chroma(load_sweep(bench.sweep_dir), bench.calibration)
    for roi, z0 in _regions(bench):
        start = z0 + offset_mm
        # a prior too vague to choose: auto would spend a probe capture
        opts = HdmeOptions(strategy="chroma", prior_uncertainty_mm=5.0, chroma=conv)
        with open_instrument(_config(AXIAL_MM, start)) as inst:
            result = autofocus_hdme(inst, roi, bench.estimator, bench.calibration, opts)
        assert result.direction == "chroma", result.chroma
        assert result.captures == 1
        assert abs(result.final_mm - z0) < 0.5 * abs(offset_mm)  # the right side
        with open_instrument(_config(AXIAL_MM, start)) as inst:
            auto = autofocus_hdme(
                inst, roi, bench.estimator, bench.calibration,
                HdmeOptions(strategy="auto", prior_uncertainty_mm=5.0),
            )  # fmt: skip
        if auto.direction != "limits":  # where the soft limits do not settle it
            assert auto.direction == "probe" and auto.captures == 2


def test_gray_frames_fall_back_to_prior_or_probe(bench: ChromaBench) -> None:
    conv = calibrate_chroma(load_sweep(bench.sweep_dir), bench.calibration)
    roi, z0 = _regions(bench)[0]
    opts = HdmeOptions(strategy="chroma", prior_uncertainty_mm=5.0, chroma=conv)
    with open_instrument(_config(0.0, z0 - 0.5)) as inst:  # a gray camera: no colour
        result = autofocus_hdme(inst, roi, bench.estimator, bench.calibration, opts)
    assert result.direction == "probe"
    assert result.chroma is not None and result.chroma["abstained"]
    assert "chroma abstained: " in result.summary_line()  # the user reads why
    assert abs(result.final_mm - z0) < 0.25


def test_convention_is_kept_beside_the_calibration(bench: ChromaBench, tmp_path: Path) -> None:
    cal_path = bench.calibration.save(tmp_path / "cal.json")
    first = load_or_calibrate_chroma(cal_path, bench.calibration)
    assert convention_path(cal_path).is_file()
    assert load_or_calibrate_chroma(cal_path, bench.calibration) == first  # read back
    moved = bench.calibration.model_copy(
        update={"sweep": bench.calibration.sweep.model_copy(update={"path": str(tmp_path / "x")}),
                "created": "another"}
    )  # fmt: skip
    gone = load_or_calibrate_chroma(tmp_path / "other.json", moved)
    assert gone.red_sharper_above is None and "cannot be read" in (gone.reason or "")


def test_cli_direction_chroma_end_to_end(bench: ChromaBench, tmp_path: Path) -> None:
    roi, z0 = _regions(bench)[0]
    cfg = _config(AXIAL_MM, z0 + 0.5)
    cfg.paths.output_dir = tmp_path / "out"
    config_file = tmp_path / "inst.toml"
    config_file.write_text(to_toml(cfg), encoding="utf-8")
    cal_path = bench.calibration.save(tmp_path / "calibration.json")
    args = ["autofocus", "-c", str(config_file), "--roi", roi.spec, "--direction", "chroma"]
    args += ["--calibration", str(cal_path), "--estimator", ESTIMATOR, "--json", "--no-refine"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["direction"] == "chroma"
    assert result["captures"] == 1
    assert abs(result["final_mm"] - z0) < 0.25
    assert convention_path(cal_path).is_file()


def test_autofocus_loads_the_chroma_code_only_when_used() -> None:
    import subprocess
    import sys

    code = "import sys, hdme_focus.instrument.autofocus\nprint('hdme_focus.records' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
