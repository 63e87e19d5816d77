"""`hdme-focus demo`: the README's main job runs end to end and reports real numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, ConfigError, InstrumentConfig, ReplayStageConfig
from hdme_focus.estimation import load_estimator
from hdme_focus.estimation.weights import default_weights_path
from hdme_focus.instrument.demo import DemoOptions, run_demo, run_from
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.session import AutofocusResult
from hdme_focus.records import OutputExistsError

runner = CliRunner()

SMALL = InstrumentConfig(camera=CameraConfig(width_px=192, height_px=144))
QUICK = DemoOptions(sweep_step_mm=0.1, trials_per_roi=1)


def test_demo_writes_a_report_with_plots_and_numbers(tmp_path: Path) -> None:
    est = load_estimator("focus-measure")  # a classical estimator: tests the procedure only
    result = run_demo(SMALL, tmp_path / "demo", est, QUICK)
    text = result.report.read_text()
    for heading in ("## 1. Sweep", "## 2. Calibration", "## 3. Autofocus", "## 4. Depth"):
        assert heading in text
    for image in ("sweep/sweep.png", "calibration.png", "depth/depth.png"):
        assert f"]({image})" in text
        assert (tmp_path / "demo" / image).stat().st_size > 5000
    data = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert data["calibration"]["rois"], data["calibration"]["rejected"]
    for roi in data["calibration"]["rois"]:  # a crude estimator, so only roughly right
        assert abs(roi["z0_mm"] - roi["true_z0_mm"]) < 0.25, roi["name"]
    by = data["autofocus"]["by_method"]
    assert by["hdme"]["trials"] == by["brent"]["trials"] == len(data["calibration"]["rois"])
    assert by["brent"]["median_captures"] >= 5 * by["hdme"]["median_captures"]
    assert by["hybrid"]["trials"] == by["hdme"]["trials"]  # the command's default, measured
    assert by["hybrid"]["median_captures"] < by["brent"]["median_captures"]
    assert (tmp_path / "demo" / "calibration.json").is_file()


def test_demo_refuses_to_overwrite_and_to_run_off_the_simulator(tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text("previous")
    est = load_estimator("focus-measure")
    with pytest.raises(OutputExistsError, match="already holds a demo report"):
        run_demo(SMALL, tmp_path, est, QUICK)
    replay = InstrumentConfig(
        stage=ReplayStageConfig(replay_dir=tmp_path),
        camera=CameraConfig(driver="replay"),
    )
    with pytest.raises(ConfigError, match="simulated instrument"):
        run_demo(replay, tmp_path / "x", est, QUICK)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--estimator", "focus-measure"])
    assert result.exit_code == 2 and "--overwrite" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped weights not installed")
def test_readme_demo_with_the_shipped_model(tmp_path: Path) -> None:
    """The README's main job, as a user runs it: default instrument, shipped weights."""
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--trials", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "demo.json").read_text())
    assert len(data["calibration"]["rois"]) >= 2, data["calibration"]["rejected"]
    hdme = data["autofocus"]["by_method"]["hdme"]
    assert hdme["median_captures"] == 1 and hdme["median_moves"] == 1
    assert hdme["median_abs_error_dof"] <= 1.0, hdme
    hybrid = data["autofocus"]["by_method"]["hybrid"]  # what `autofocus` does by default
    assert hybrid["median_abs_error_dof"] <= 0.5 and hybrid["median_captures"] <= 5, hybrid
    assert "autofocus (default, refined):" in result.stdout
    assert data["depth"]["median_rel_error"] < 0.15


def test_methods_run_from_one_start_see_the_same_noise() -> None:
    """A paired comparison: the second method's frames do not depend on how many frames the
    first one took (before, the simulator's noise stream ran on across methods)."""
    cfg = InstrumentConfig(camera=CameraConfig(width_px=96, height_px=64))
    with open_instrument(cfg) as inst:

        def attempt(n_frames: int, seen: list[np.ndarray]) -> AutofocusResult:
            for _ in range(n_frames):
                seen.append(inst.capture().image.astype(np.int64))
            return AutofocusResult("test", "roi", start_mm=1.0, final_mm=1.0)

        first: list[np.ndarray] = []
        second: list[np.ndarray] = []
        run_from(inst, 1.0, lambda: attempt(3, first), noise_seed=7)
        run_from(inst, 1.0, lambda: attempt(2, second), noise_seed=7)
        assert all(np.array_equal(a, b) for a, b in zip(first[:2], second, strict=True))
        assert not np.array_equal(first[0], first[1])  # still noise, frame to frame
        other: list[np.ndarray] = []
        run_from(inst, 1.0, lambda: attempt(1, other), noise_seed=8)
        assert not np.array_equal(other[0], first[0])
