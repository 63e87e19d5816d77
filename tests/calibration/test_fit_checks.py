"""Calibration refuses fits that disagree with the optics, themselves or the soft limits,
keeps calibrations of different sweeps apart, and says what it did on the line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sim_oracle import OracleEstimator
from typer.testing import CliRunner

from hdme_focus.calibration.fit import assess_fit, fit_problems, fit_vcurve, vcurve_sigma_px
from hdme_focus.calibration.model import load_calibration
from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, ConfigError, InstrumentConfig, load_config, to_toml
from hdme_focus.instrument.calibrate import calibrate_sweep, sweep_sigmas
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.optics import ThinLens
from hdme_focus.records import load_sweep

runner = CliRunner()
LENS = ThinLens(50.0, 8.0, 5.0, 51.0, "image")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))
    out = tmp_path_factory.mktemp("sweep") / "scene-a"
    with open_instrument(cfg) as inst:
        run_sweep(
            inst,
            plan_positions(0.5, 2.4, 0.1),
            default_rois(inst),
            out,
            estimator=OracleEstimator(inst.camera),  # type: ignore[arg-type]
        )
    return out


def _edit_config(src: Path, dst: Path, section: str, **values: Any) -> Path:
    """A copy of a sweep whose recorded instrument config says something else."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "sweep.json").read_text())
    manifest["config"][section].update(values)
    (dst / "sweep.json").write_text(json.dumps(manifest))
    return dst


def test_slope_disagreeing_with_the_optics_is_said_on_the_line_and_in_the_file(
    sweep: Path, tmp_path: Path
) -> None:
    # the frames were taken at f/8; a config claiming f/3.1 predicts a 2.6x steeper V
    wrong = _edit_config(sweep, tmp_path / "f31", "optics", f_number=3.1)
    result = runner.invoke(app, ["calibrate", str(wrong), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "thin lens" in result.stderr and "f/3.1" in result.stderr
    cal = load_calibration(tmp_path / "c.json")
    assert all(any("thin lens" in w for w in r.warnings) for r in cal.rois)


def test_slope_grossly_off_the_optics_is_refused(sweep: Path, tmp_path: Path) -> None:
    run = calibrate_sweep(sweep)
    assert not run.rejected and all(not r.warnings for r in run.calibration.rois)
    # pixel pitch typed in mm-ish units: the thin lens predicts a 10x steeper V
    wrong = _edit_config(sweep, tmp_path / "pitch", "optics", pixel_pitch_um=0.5)
    result = runner.invoke(app, ["calibrate", str(wrong), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 2, result.output
    assert "thin lens" in result.stderr and "pixel_pitch_um" in result.stderr
    assert not (tmp_path / "c.json").exists()


def test_focus_outside_the_soft_limits_is_refused(sweep: Path, tmp_path: Path) -> None:
    narrow = _edit_config(sweep, tmp_path / "narrow", "stage", max_mm=1.5)
    run = calibrate_sweep(narrow)
    kept = {r.name for r in run.calibration.rois}
    assert {"H", "D"} <= set(run.rejected)  # focus at 1.94 and 1.63 mm
    assert "soft limits" in run.rejected["H"]
    assert {"M", "background"} == kept
    # the refused regions are in the file, so autofocus can say so
    rejected = {r.name for r in run.calibration.rejected}
    assert rejected == {"H", "D"}
    box = run.record.rois["H"].as_tuple()
    hit = run.calibration.rejected_covering(box)
    assert hit is not None and hit.name == "H"
    assert run.calibration.rejected_covering(run.record.rois["M"].as_tuple()) is None


def test_reported_uncertainty_matches_the_spread_over_repeated_sweeps() -> None:
    """The z0 uncertainty must match how far z0 moves between repeat sweeps (the Jacobian
    error alone was 1.5-2x too small on a dozen frames with heavy-tailed noise)."""
    z = np.arange(0.9, 2.01, 0.1)
    truth = vcurve_sigma_px(z, 1.43, 8.0, 0.8)
    errors, reported = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        s = truth + 0.15 * rng.standard_t(2, z.size)
        fit = fit_vcurve(z, s)
        errors.append(fit.z0_mm - 1.43)
        reported.append(assess_fit(fit, z, s, None).z0_uncertainty_mm)
    spread = float(np.sqrt(np.mean(np.square(errors))))
    assert 0.7 * spread < float(np.median(reported)) < 1.5 * spread, (spread, reported)


def test_an_uncertain_focus_is_refused() -> None:
    z = np.arange(0.5, 2.41, 0.1)
    rng = np.random.default_rng(1)
    s = vcurve_sigma_px(z, 1.43, 8.0, 0.5) + rng.normal(0, 1.5, z.size)
    fit = fit_vcurve(z, s)
    assert not fit_problems(fit)  # R^2 and RMSE alone would accept it
    check = assess_fit(fit, z, s, None)
    assert any("focus not located" in p for p in check.problems), check


def test_cli_prints_the_uncertainty_and_csv_when_piped(sweep: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["calibrate", str(sweep), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("ROI,"))
    assert "+/- mm" in header.split(",") and "u mm" in header.split(",")
    assert "…" not in result.stdout
    cal = load_calibration(tmp_path / "c.json")
    assert all(r.z0_bootstrap_mm is not None for r in cal.rois)


def test_calibrating_two_sweeps_keeps_both_and_says_which_replaced(
    sweep: Path, tmp_path: Path
) -> None:
    other = tmp_path / "scene-b"
    shutil.copytree(sweep, other)
    cfg = InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))
    cfg.paths.output_dir = tmp_path / "out"
    config = tmp_path / "instrument.toml"
    config.write_text(to_toml(cfg))
    first = runner.invoke(app, ["calibrate", str(sweep), "-c", str(config)])
    assert first.exit_code == 0, first.output
    assert "replaces" not in first.stdout
    second = runner.invoke(app, ["calibrate", str(other), "-c", str(config)])
    assert second.exit_code == 0, second.output
    assert "replaces" in second.stdout and str(sweep.resolve()) in second.stdout
    kept = sorted(p.name for p in (tmp_path / "out" / "calibrations").glob("*.json"))
    assert kept == ["scene-a.json", "scene-b.json"]
    active = load_calibration(tmp_path / "out" / "calibration.json")
    assert active.sweep.path == str(other.resolve())
    a = load_calibration(tmp_path / "out" / "calibrations" / "scene-a.json")
    assert a.sweep.path == str(sweep.resolve())


def test_out_that_is_not_a_calibration_is_not_overwritten(sweep: Path, tmp_path: Path) -> None:
    precious = tmp_path / "notes.json"
    precious.write_text('{"mine": true}')
    result = runner.invoke(app, ["calibrate", str(sweep), "--out", str(precious)])
    assert result.exit_code == 2
    assert "not an hdme-focus calibration" in result.stderr
    assert precious.read_text() == '{"mine": true}'


class CountingOracle(OracleEstimator):
    calls = 0

    def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
        CountingOracle.calls += 1
        return super().predict(image, bit_depth, **kw)


def test_recorded_blur_is_reused_only_for_the_same_estimator(sweep: Path) -> None:
    record = load_sweep(sweep)
    with open_instrument(InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))) as i:
        est = CountingOracle(i.camera)  # type: ignore[arg-type]
        CountingOracle.calls = 0
        _, name = sweep_sigmas(record, est)  # same name as the recording: nothing estimated
        assert name == est.name and CountingOracle.calls == 0
        est.name = "another-estimator"
        _, name = sweep_sigmas(record, est)  # another blur scale: estimated again
        assert name == "another-estimator" and CountingOracle.calls == len(record)
        _, name = sweep_sigmas(record, est, prefer_recorded=True)  # user named none
        assert name == "oracle-test-only" and CountingOracle.calls == len(record)


def test_sensor_inside_the_focal_length_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "i.toml"
    path.write_text(
        '[optics]\nfocal_length_mm = 50.0\nsensor_distance_mm = 40.0\nsetup = "image"\n'
    )
    with pytest.raises(ConfigError, match=r"sensor_distance_mm.*must exceed focal_length_mm"):
        load_config(path)


def test_non_utf8_config_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("[stage]\n# Bühne\nmax_mm = 3.0\n".encode("latin-1"))
    result = runner.invoke(app, ["config", "show", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "UTF-8" in result.stderr and "Traceback" not in result.output


def test_calibrating_a_killed_sweep_says_it_was_interrupted(sweep: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    killed = tmp_path / "killed"
    shutil.copytree(sweep, killed)
    manifest = json.loads((killed / "sweep.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    manifest.update(status="running", writer={"pid": dead.pid, "host": manifest["writer"]["host"]})
    (killed / "sweep.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["calibrate", str(killed), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())
    assert f"interrupted: process {dead.pid} ended without closing the sweep" in err


def test_unknown_device_is_one_usage_error() -> None:
    result = runner.invoke(app, ["autofocus", "--roi", "1,1,20,20", "--device", "tpu"])
    assert result.exit_code == 2
    assert "tpu" in result.output and "Traceback" not in result.output
