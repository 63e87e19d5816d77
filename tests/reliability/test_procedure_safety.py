"""Issue 10, procedure level: nothing overwritten, no silent wrong answer, truthful records."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sim_oracle import OracleEstimator, truth_calibration
from typer.testing import CliRunner

from hdme_focus.calibration.model import RejectedRoi
from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, InstrumentConfig, PathsConfig, to_toml
from hdme_focus.core.errors import EXIT_NOT_IN_FOCUS, EXIT_REFUSED, DeviceError
from hdme_focus.core.roi import Roi
from hdme_focus.instrument.autofocus import HdmeOptions, autofocus_hdme
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.search import SearchOptions, autofocus_brent, autofocus_sweep
from hdme_focus.instrument.session import AutofocusRefused, AutofocusResult
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.records import MANIFEST, check_out_dir, load_sweep

runner = CliRunner()
SMALL = InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = SMALL.model_copy(update={"paths": PathsConfig(output_dir=tmp_path / "out")})
    path = tmp_path / "instrument.toml"
    path.write_text(to_toml(cfg))
    return path


def _sweep_args(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        "--start",
        "0.9",
        "--stop",
        "1.1",
        "--step",
        "0.1",
        "-c",
        str(config),
        "--out",
        str(out),
        "--no-plot",
        *extra,
    ]


# --------------------------------------------------------------------------- sweep --out


def test_sweep_refuses_a_folder_holding_other_files(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "photos"
    (out / "frames").mkdir(parents=True)
    mine = out / "frames" / "00000.tif"
    mine.write_bytes(b"my own picture")
    for extra in ([], ["--overwrite"]):
        result = runner.invoke(app, _sweep_args(config, out, *extra))
        assert result.exit_code == 2, result.output
        assert "not a sweep" in result.stderr
        assert mine.read_bytes() == b"my own picture"


def test_overwrite_removes_only_what_the_manifest_lists(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert runner.invoke(app, _sweep_args(config, out)).exit_code == 0
    foreign = out / "frames" / "my_photo.tif"
    foreign.write_bytes(b"keep")
    notes = out / "notes.txt"
    notes.write_text("keep")
    result = runner.invoke(app, _sweep_args(config, out, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert foreign.read_bytes() == b"keep" and notes.read_text() == "keep"
    assert len(load_sweep(out)) == 3


def test_step_larger_than_the_range_is_refused(config: Path, tmp_path: Path) -> None:
    args = _sweep_args(config, tmp_path / "s")
    args[args.index("--step") + 1] = "0.5"
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "larger than the range" in result.stderr
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- stale manifests


def test_a_killed_sweep_is_reported_as_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "s"
    with open_instrument(SMALL) as inst:
        run_sweep(inst, plan_positions(0.9, 1.1, 0.1), {"c": Roi(40, 30, 80, 60)}, out)
    manifest = json.loads((out / MANIFEST).read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    manifest.update(status="running", writer={"pid": dead.pid, "host": manifest["writer"]["host"]})
    (out / MANIFEST).write_text(json.dumps(manifest))  # as SIGKILL leaves it
    record = load_sweep(out)
    assert record.status == "partial"
    assert record.reason is not None and record.reason.startswith("interrupted")
    assert f"process {dead.pid}" in record.reason and "3 of 3 frames" in record.reason
    with pytest.raises(Exception, match="interrupted"):
        check_out_dir(out)


def test_a_stage_losing_its_position_ends_the_sweep_partial(tmp_path: Path) -> None:
    with open_instrument(SMALL) as inst:
        real = inst.stage.position_mm
        calls = {"n": 0}

        def flaky() -> float:
            calls["n"] += 1
            return math.nan if calls["n"] > 6 else real()

        inst.stage.position_mm = flaky  # type: ignore[method-assign]
        with pytest.raises(DeviceError, match="reported position nan"):
            run_sweep(inst, plan_positions(0.5, 1.5, 0.1), {"c": Roi(40, 30, 80, 60)}, tmp_path)
    record = load_sweep(tmp_path)
    assert record.status == "partial" and np.isfinite(record.positions_mm).all()


# --------------------------------------------------------------------------- searches


def _region(name: str) -> Roi:
    with open_instrument(SMALL) as inst:
        return default_rois(inst)[name]


@pytest.mark.parametrize("search", [autofocus_brent, autofocus_sweep])
def test_a_window_without_focus_is_not_bracketed(search: Any) -> None:
    roi = _region("D")  # focus at 1.63 mm, the window [0.75, 1.25] mm
    with open_instrument(SMALL) as inst:
        start = inst.stage.position_mm()
        with pytest.raises(AutofocusRefused, match="focus not bracketed") as info:
            search(inst, roi, SearchOptions(range_mm=(start - 0.25, start + 0.25)))
        assert inst.stage.position_mm() == pytest.approx(start)  # back where it began
        assert info.value.result is not None and math.isnan(info.value.result.target_mm)
        widened = search(
            inst, roi, SearchOptions(range_mm=(start - 0.25, start + 0.25), widen=True)
        )
        assert widened.final_mm == pytest.approx(1.632, abs=0.05)


def test_cli_not_bracketed_exits_refused(config: Path) -> None:
    roi = _region("D")
    args = ["autofocus", "--roi", roi.spec, "--method", "brent", "--span", "0.5", "-c", str(config)]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "focus not bracketed" in result.stderr


# --------------------------------------------------------------------------- autofocus


def test_verify_not_in_focus_has_its_own_exit_code(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_in_focus(*args: Any, **kwargs: Any) -> AutofocusResult:
        return AutofocusResult(
            method="hdme",
            roi="1,1,9,9",
            start_mm=1.0,
            final_mm=1.2,
            verified_sigma_px=3.0,
            in_focus=False,
        )

    monkeypatch.setattr(
        "hdme_focus.cli.focus_cmd._calibration_and_estimator", lambda *a: (None, None)
    )
    monkeypatch.setattr("hdme_focus.instrument.autofocus.autofocus_hdme", not_in_focus)
    result = runner.invoke(
        app, ["autofocus", "--roi", "10,10,40,40", "--verify", "--no-refine", "-c", str(config)]
    )
    assert result.exit_code == EXIT_NOT_IN_FOCUS == 5, result.output
    assert "NOT in focus" in result.stdout


def test_negative_prior_uncertainty_is_refused(config: Path) -> None:
    args = ["autofocus", "--roi", "10,10,40,40", "--prior-uncertainty", "-1", "-c", str(config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--prior-uncertainty -1" in result.stderr


def test_a_region_calibrate_refused_is_said_on_the_line_and_in_the_json() -> None:
    with open_instrument(SMALL) as inst:
        cal = truth_calibration(inst, names=["M", "background"])
        box = default_rois(inst)["D"]
        cal = cal.model_copy(
            update={"rejected": [RejectedRoi(name="D", roi=box.as_tuple(), reason="poor fit")]}
        )
        est = OracleEstimator(inst.camera, box.as_tuple())  # type: ignore[arg-type]
        result = autofocus_hdme(inst, box, est, cal, HdmeOptions(strategy="probe"))  # type: ignore[arg-type]
    assert result.calibration_note is not None and "refused region 'D'" in result.calibration_note
    assert result.to_json()["calibration_note"] == result.calibration_note
    assert "refused region 'D'" in result.summary_line()


# --------------------------------------------------------------------------- interruption words


def test_commands_that_move_nothing_do_not_say_stage_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("hdme_focus.estimation.baselines.ReblurEstimator.predict_gray", interrupted)
    result = runner.invoke(
        app, ["estimate", str(img), "--out", str(tmp_path / "o"), "--estimator", "reblur"]
    )
    assert result.exit_code == 130
    assert "interrupted" in result.stderr and "stage" not in result.stderr


def test_piped_tables_are_csv_with_every_column(config: Path, tmp_path: Path) -> None:
    import csv
    import io

    result = runner.invoke(app, _sweep_args(config, tmp_path / "s"))
    assert result.exit_code == 0, result.output
    text = result.stdout[result.stdout.index("# best focus per ROI") :]
    rows = list(csv.reader(io.StringIO(text.split("\nframes:")[0]), delimiter=","))
    assert rows[1][:2] == ["ROI", "x,y,w,h"] and "tenengrad" in rows[1]
    assert all(len(r) == len(rows[1]) for r in rows[2:]) and len(rows) > 2
    assert "…" not in result.stdout
