"""Sweeps on the simulated instrument: peaks where the optics say, refusals, partial records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import ArrayLike, NDArray
from typer.testing import CliRunner

from hdme_focus.cli.app import app
from hdme_focus.config import ConfigError, InstrumentConfig
from hdme_focus.core.roi import Roi, RoiError
from hdme_focus.drivers.base import DeviceError, MotionRefused, StageFault
from hdme_focus.estimation.base import DefocusEstimate, confidence_from_scale
from hdme_focus.instrument.autofocus import estimate_roi
from hdme_focus.instrument.devices import Instrument, open_instrument
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.records import SweepExistsError, load_sweep

STEP_MM = 0.1
SMALL = {"camera": {"width_px": 160, "height_px": 120}}


@pytest.fixture
def instrument() -> Iterator[Instrument]:
    with open_instrument(InstrumentConfig.model_validate(SMALL)) as inst:
        yield inst


def test_plan_positions_covers_the_range_in_either_direction() -> None:
    assert plan_positions(0.0, 0.3, 0.1) == [0.0, 0.1, 0.2, 0.3]
    assert plan_positions(1.0, 0.75, 0.1) == [1.0, 0.9, 0.8]
    assert len(plan_positions(0.0, 3.0, 0.02)) == 151
    with pytest.raises(ValueError, match=r"step 0\.0 mm: must be a positive distance"):
        plan_positions(0.0, 1.0, 0.0)


def test_each_roi_peaks_within_one_step_of_its_true_focus(
    instrument: Instrument, tmp_path: Path
) -> None:
    rois = default_rois(instrument)
    assert len(rois) >= 3  # the letters scene: three targets at different distances + background
    # A letter's box shows the background (in focus at 1.0 mm) between its strokes, and the
    # letters' depth of focus is a few hundredths of a mm: at 0.1 mm steps the frame nearest
    # H's focus is 0.04 mm off, where H is already about as sharp as the background at its
    # own focus, so the steps are fine enough to put a frame inside each letter's focus.
    step_mm = STEP_MM / 2
    out = run_sweep(instrument, plan_positions(0.0, 3.0, step_mm), rois, tmp_path / "s")

    record = load_sweep(out)
    assert record.status == "complete" and len(record) == 61
    truths = []
    for name, roi in rois.items():
        true_mm = instrument.camera.focus_position_mm(roi.as_tuple())  # type: ignore[attr-defined]
        truths.append(true_mm)
        for measure in ("lap_var", "tenengrad", "norm_var"):
            curve = record.roi_values(name, measure)
            peak_mm = record.positions_mm[int(np.argmax(curve))]
            assert abs(peak_mm - true_mm) <= step_mm + 1e-9, (name, measure, peak_mm, true_mm)
    assert max(truths) - min(truths) > 3 * STEP_MM  # the targets really are at different depths
    # every row points at a readable frame stamped with the reported stage position
    frame = record.read_frame(5)
    assert frame.position_mm == pytest.approx(record.positions_mm[5])
    assert frame.image.shape == (120, 160) and frame.bit_depth == 12


@pytest.mark.parametrize(
    ("positions", "fragment"),
    [
        ([2.5, 2.9, 3.3], "outside the soft limits"),
        ([-0.2, 0.0], "outside the soft limits"),
        ([0.0, 1.5], "exceeds stage.max_step_mm"),
    ],
)
def test_refused_range_moves_nothing_and_writes_nothing(
    instrument: Instrument, tmp_path: Path, positions: list[float], fragment: str
) -> None:
    stage = instrument.raw_stage
    before = stage.position_mm()
    out = tmp_path / "refused"
    with pytest.raises(MotionRefused, match=fragment):
        run_sweep(instrument, positions, {"c": Roi(0, 0, 16, 16)}, out)
    assert stage.moves == 0 and stage.position_mm() == before  # type: ignore[attr-defined]
    assert not out.exists()


def test_bad_roi_and_existing_sweep_are_refused_before_motion(
    instrument: Instrument, tmp_path: Path
) -> None:
    with pytest.raises(RoiError, match="outside the 160x120 frame"):
        run_sweep(instrument, [1.0, 1.1], {"c": Roi(100, 100, 64, 64)}, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    run_sweep(instrument, [1.0], {"c": Roi(0, 0, 16, 16)}, tmp_path / "b")
    moves = instrument.raw_stage.moves  # type: ignore[attr-defined]
    with pytest.raises(SweepExistsError, match="already holds a sweep"):
        run_sweep(instrument, [1.2, 1.1], {"c": Roi(0, 0, 16, 16)}, tmp_path / "b")
    assert instrument.raw_stage.moves == moves  # type: ignore[attr-defined]
    assert len(load_sweep(tmp_path / "b")) == 1  # the old record is untouched


@pytest.mark.parametrize("fault_in", ["move_to", "wait"])
def test_device_fault_mid_sweep_leaves_a_readable_partial_record(
    instrument: Instrument, tmp_path: Path, fault_in: str
) -> None:
    stage = instrument.raw_stage

    def inject(done: int, total: int, position_mm: float) -> None:
        if done == 4:
            stage.fault_in = fault_in  # type: ignore[attr-defined]
            stage.fault_on_next_move = StageFault("simulated alarm")  # type: ignore[attr-defined]

    with pytest.raises(StageFault):
        run_sweep(
            instrument,
            plan_positions(0.0, 1.0, 0.1),
            {"c": Roi(40, 30, 80, 60)},
            tmp_path / "s",
            progress=inject,
        )
    record = load_sweep(tmp_path / "s")
    assert record.status == "partial"
    assert "StageFault" in (record.reason or "") and "4 of 11" in (record.reason or "")
    assert len(record) == 4 and np.all(np.isfinite(record.roi_values("c", "lap_var")))
    assert stage.stopped >= 1 and not stage.is_moving()  # type: ignore[attr-defined]


def test_ctrl_c_mid_sweep_stops_the_stage_and_keeps_the_rows(
    instrument: Instrument, tmp_path: Path
) -> None:
    stage = instrument.raw_stage

    def interrupt(done: int, total: int, position_mm: float) -> None:
        if done == 3:
            raise KeyboardInterrupt

    stopped_before = stage.stopped  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            instrument,
            plan_positions(0.5, 1.5, 0.1),
            {"c": Roi(40, 30, 80, 60)},
            tmp_path / "s",
            progress=interrupt,
        )
    record = load_sweep(tmp_path / "s")
    assert record.status == "partial" and "interrupted" in (record.reason or "")
    assert len(record) == 3
    assert stage.stopped > stopped_before  # type: ignore[attr-defined]


class _FlatEstimator:
    """Stands in for an estimator: blur proportional to distance from 1.3 mm."""

    name = "fake"

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument

    def predict(self, image: ArrayLike, bit_depth: int | None = None) -> NDArray[np.float32]:
        sigma = abs(self.instrument.stage.position_mm() - 1.3) * 8.0
        return np.full(np.shape(image)[:2], sigma, dtype=np.float32)

    def estimate(self, image: ArrayLike, bit_depth: int | None = None) -> DefocusEstimate:
        sigma = self.predict(image, bit_depth)
        return DefocusEstimate(sigma, np.ones_like(sigma))


class _HalfSure:
    """A learned-confidence estimator: reads 2 px on the left half of every frame, where it
    is sure, and 7 px on the right half, where its error scale says it cannot read."""

    name = "half-sure"
    sigma_max_px = 10.0

    def predict(
        self, image: ArrayLike, bit_depth: int | None = None, **_: object
    ) -> NDArray[np.float32]:
        return self.estimate(image).sigma_px

    def estimate(
        self, image: ArrayLike, bit_depth: int | None = None, **_: object
    ) -> DefocusEstimate:
        h, w = np.shape(image)[:2]
        sigma = np.full((h, w), 2.0, np.float32)
        sigma[:, w // 2 :] = 7.0
        scale = np.full((h, w), 0.3, np.float32)
        scale[:, w // 2 :] = 2.4  # nearly the know-nothing error (sigma_max / 4)
        return DefocusEstimate(sigma, confidence_from_scale(scale, self.sigma_max_px), scale)


def test_a_sweep_records_a_region_as_autofocus_reads_it(
    instrument: Instrument, tmp_path: Path
) -> None:
    """The calibration is fitted to the sweep's columns and then read by autofocus: both
    must gate by the learned confidence (the sweep once took the ungated median)."""
    roi = Roi(40, 30, 80, 60)  # straddles the frame's middle: half sure, half not
    est = _HalfSure()
    out = run_sweep(instrument, [1.0, 1.3], {"c": roi}, tmp_path / "s", estimator=est)
    recorded = load_sweep(out).roi_values("c", "sigma_px")
    read = estimate_roi(instrument.capture(), roi, est)  # type: ignore[arg-type]
    np.testing.assert_allclose(recorded, [read.sigma_px] * 2)
    assert read.sigma_px == pytest.approx(2.0)


def test_estimator_adds_sigma_columns(instrument: Instrument, tmp_path: Path) -> None:
    rois = {"c": Roi(40, 30, 80, 60)}
    out = run_sweep(
        instrument, [1.0, 1.3, 1.6], rois, tmp_path / "s", estimator=_FlatEstimator(instrument)
    )
    record = load_sweep(out)
    assert record.manifest["metadata"]["estimator"] == "fake"
    np.testing.assert_allclose(record.roi_values("c", "sigma_px"), [2.4, 0.0, 2.4], atol=1e-5)
    contrast = record.roi_values("c", "contrast")  # of the pixels that reading used
    assert np.all(np.isfinite(contrast)) and np.all(contrast > 0)


runner = CliRunner()


def _write_small_config(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text("[camera]\nwidth_px = 160\nheight_px = 120\n")
    return path


def test_cli_sweep_writes_frames_table_manifest_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "s"
    result = runner.invoke(
        app,
        [
            "sweep",
            "--step",
            "0.25",
            "--out",
            str(out),
            "--config",
            str(_write_small_config(tmp_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "sweep.csv").is_file() and (out / "sweep.json").is_file()
    assert (out / "sweep.png").stat().st_size > 10_000
    assert len(list((out / "frames").glob("*.tif"))) == 13
    assert "best focus per ROI" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--roi", "10,10,0,5"], "zero or negative area"),
        (["--roi", "150,10,64,64"], "outside the 160x120 frame"),
        (["--start", "2", "--stop", "4"], "outside the soft limits"),
        (["--span", "1", "--start", "0"], "either --span or --start/--stop"),
        (["--step", "-1"], "--step"),
    ],
)
def test_cli_sweep_user_errors_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    out = tmp_path / "s"
    result = runner.invoke(
        app, ["sweep", "--out", str(out), "--config", str(_write_small_config(tmp_path)), *args]
    )
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not out.exists()


def test_cli_names_its_flags_when_out_already_holds_a_sweep(tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text("{}")  # any manifest marks a sweep directory
    result = runner.invoke(
        app, ["sweep", "--out", str(out), "--config", str(_write_small_config(tmp_path))]
    )
    assert result.exit_code == 2, result.output
    assert f"--out {out}: already holds a sweep" in result.stderr
    assert "pass --overwrite" in result.stderr
    assert (out / "sweep.json").read_text() == "{}"


def test_instrument_stops_the_stage_and_closes_devices_on_exception() -> None:
    cfg = InstrumentConfig.model_validate(SMALL)
    with pytest.raises(RuntimeError), open_instrument(cfg) as inst:
        inst.raw_stage.move_to(2.0)  # raw move, not waited for: still moving
        assert inst.raw_stage.is_moving()
        raise RuntimeError("boom")
    assert inst.raw_stage.stopped >= 1 and not inst.raw_stage.is_moving()  # type: ignore[attr-defined]
    with pytest.raises(DeviceError):
        inst.camera.capture()


def test_sim_stage_with_a_hardware_camera_is_a_config_error() -> None:
    cfg = InstrumentConfig.model_validate({"camera": {"driver": "opencv"}})
    with pytest.raises(ConfigError, match=r"camera.driver = 'opencv'.*set both to 'sim'"):
        open_instrument(cfg)
