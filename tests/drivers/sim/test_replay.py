"""Replay driver: recorded sweeps and image folders replayed as a stage + camera."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from hdme_focus.cli.app import app
from hdme_focus.config import (
    CameraConfig,
    ConfigError,
    InstrumentConfig,
    PathsConfig,
    ReplayStageConfig,
    to_toml,
)
from hdme_focus.drivers.base import MotionRefused
from hdme_focus.drivers.sim import SimClock
from hdme_focus.drivers.sim.replay import (
    ReplayCamera,
    ReplayError,
    ReplayStage,
    load_recording,
    recording_from_files,
)
from hdme_focus.estimation import load_estimator
from hdme_focus.instrument.calibrate import calibrate_sweep
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.records import load_sweep

runner = CliRunner()

PCB = Path(__file__).resolve().parents[4] / "shared/data/pcb-focus-sweep"
SMALL = CameraConfig(width_px=160, height_px=120)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulator sweep with an image-based estimator's blur in its rows."""
    out = tmp_path_factory.mktemp("rec") / "sweep"
    cfg = InstrumentConfig(camera=SMALL)
    with open_instrument(cfg) as inst:
        rois = {k: v for k, v in default_rois(inst).items() if k in ("background", "D")}
        run_sweep(
            inst,
            plan_positions(0.5, 2.2, 0.05),
            rois,
            out,
            estimator=load_estimator("focus-measure"),
        )
    return out


def _replay_config(directory: Path, **stage: float) -> InstrumentConfig:
    return InstrumentConfig(
        stage=ReplayStageConfig(replay_dir=directory, **stage),  # type: ignore[arg-type]
        camera=CameraConfig(driver="replay", width_px=160, height_px=120),
    )


def test_moving_selects_the_nearest_recorded_frame(recorded: Path) -> None:
    rec = load_sweep(recorded)
    with open_instrument(_replay_config(recorded, start_mm=1.0)) as inst:
        inst.stage.move_to(1.23)  # recorded at 1.20 and 1.25
        frame = inst.capture()
        assert frame.position_mm == pytest.approx(1.23)  # what the stage reports
        assert frame.meta["camera_position_mm"] == pytest.approx(1.25)  # the frame shown
        i = int(np.argmin(np.abs(rec.positions_mm - 1.25)))
        np.testing.assert_array_equal(frame.image, rec.read_frame(i).image)
        assert frame.bit_depth == 12
        t0 = inst.clock.monotonic()
        inst.stage.move_to(1.73)
        assert inst.clock.monotonic() - t0 >= 0.5 / 2.0  # simulated travel time at 2 mm/s


def test_moves_beyond_the_recording_are_refused(recorded: Path) -> None:
    with open_instrument(_replay_config(recorded, start_mm=0.6)) as inst:
        with pytest.raises(MotionRefused, match=r"no frame was recorded near 0\.2000 mm"):
            inst.stage.move_to(0.2)
        assert inst.stage.position_mm() == pytest.approx(0.6)


def test_replayed_sweep_gives_the_same_calibration(recorded: Path, tmp_path: Path) -> None:
    """Calibrate the original, then re-record it offline through the replay driver."""
    original = calibrate_sweep(recorded).calibration
    est = load_estimator("focus-measure")
    again = tmp_path / "again"
    with open_instrument(_replay_config(recorded, start_mm=0.5)) as inst:
        rois = load_sweep(recorded).rois
        # offset by a quarter step: every move still selects the nearest recorded frame
        run_sweep(inst, plan_positions(0.51, 2.19, 0.05), rois, again, estimator=est)
    replayed = calibrate_sweep(again).calibration
    for a in original.rois:
        b = replayed.roi_named(a.name)
        assert b.z0_mm == pytest.approx(a.z0_mm, abs=0.02)
        assert b.k_px_per_mm == pytest.approx(a.k_px_per_mm, rel=0.05)
        assert b.sigma0_px == pytest.approx(a.sigma0_px, abs=0.2)


def test_image_folder_with_positions_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), rng.integers(0, 255, (40, 50, 3), np.uint8))
    (tmp_path / "positions.csv").write_text(
        "file,position_mm\nimg_2.png,0.4\nimg_0.png,0.0\nimg_1.png,0.2\n"
    )
    rec = load_recording(tmp_path)
    np.testing.assert_allclose(rec.positions_mm, [0.0, 0.2, 0.4])
    clock = SimClock()
    stage = ReplayStage(rec, clock, start_mm=0.0)
    cam = ReplayCamera(rec, stage, clock)
    stage.move_to(0.33)
    frame = cam.capture()
    assert frame.meta["replay_file"].endswith("img_2.png")
    bgr = cv2.imread(str(tmp_path / "img_2.png"))
    np.testing.assert_array_equal(frame.image, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert frame.bit_depth == 8


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("file,position_mm\nimg_0.png,abc\n", "expected 'file,position_mm'"),
        ("file,position_mm\nmissing.png,0.1\n", "missing.png: frame file is missing"),
        ("file,position_mm\nimg_0.png,0.1\nimg_0.png,0.1\n", "two frames share one position"),
        ("file,position_mm\n", "no frames to replay"),
    ],
)
def test_bad_positions_csv_is_a_clear_error(tmp_path: Path, csv_text: str, message: str) -> None:
    cv2.imwrite(str(tmp_path / "img_0.png"), np.zeros((20, 20), np.uint8))
    (tmp_path / "positions.csv").write_text(csv_text)
    with pytest.raises(ReplayError, match=message):
        load_recording(tmp_path)


def test_folder_without_a_recording_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"add a positions\.csv"):
        load_recording(tmp_path)
    cfg = _replay_config(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"stage.replay_dir: .*no such directory"):
        open_instrument(cfg)
    with pytest.raises(ConfigError, match=r"needs stage\.replay_dir"):
        open_instrument(
            InstrumentConfig(stage=ReplayStageConfig(), camera=CameraConfig(driver="replay"))
        )


def test_sweep_with_a_missing_frame_cannot_be_replayed(recorded: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(recorded, broken)
    (broken / "frames" / "00003.tif").unlink()
    with pytest.raises(ReplayError, match=r"00003.tif: frame file is missing"):
        load_recording(broken)


def test_cli_autofocus_on_a_missing_replay_dir_is_exit_2(tmp_path: Path) -> None:
    cfg = _replay_config(tmp_path / "nowhere").model_copy(
        update={"paths": PathsConfig(output_dir=tmp_path)}
    )
    config = tmp_path / "replay.toml"
    config.write_text(to_toml(cfg))
    result = runner.invoke(
        app, ["autofocus", "--roi", "10,10,20,20", "--method", "sweep", "-c", str(config)]
    )
    assert result.exit_code == 2
    assert "stage.replay_dir" in result.stderr and "Traceback" not in result.output


@pytest.mark.skipif(not PCB.is_dir(), reason="shared pcb-focus-sweep data not present")
def test_real_pcb_sweep_replays_by_frame_index() -> None:
    files = sorted(PCB.glob("pcb_*.jpg"))
    assert len(files) == 7
    rec = recording_from_files(files, [float(i + 1) for i in range(len(files))], source=PCB)
    clock = SimClock()
    stage = ReplayStage(rec, clock, start_mm=1.0)
    cam = ReplayCamera(rec, stage, clock)
    stage.move_to(4.4)
    frame = cam.capture()
    assert frame.meta["replay_file"].endswith("pcb_004.jpg")
    assert frame.image.shape == (1536, 2048, 3) and frame.image.dtype == np.uint8
