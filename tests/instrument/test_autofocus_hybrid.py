"""The hybrid autofocus: HDME jump, then the focus-measure refinement (instrument/hybrid.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sim_oracle import OracleEstimator, truth_calibration
from typer.testing import CliRunner

from hdme_focus.calibration.model import Calibration
from hdme_focus.cli.app import app
from hdme_focus.config import (
    CameraConfig,
    InstrumentConfig,
    PathsConfig,
    SceneConfig,
    SimStageConfig,
    to_toml,
)
from hdme_focus.core.roi import Roi
from hdme_focus.instrument.autofocus import HdmeOptions, Thresholds, autofocus_hdme
from hdme_focus.instrument.devices import Instrument, open_instrument
from hdme_focus.instrument.hybrid import PeakFit, RefineOptions, autofocus_hybrid, fit_peak
from hdme_focus.instrument.session import AutofocusRefused

SIZE = (192, 144)
runner = CliRunner()


@pytest.fixture
def inst() -> Iterator[Instrument]:
    cfg = InstrumentConfig(camera=CameraConfig(width_px=SIZE[0], height_px=SIZE[1]))
    with open_instrument(cfg) as instrument:
        yield instrument


@pytest.fixture
def cal(inst: Instrument) -> Calibration:
    return truth_calibration(inst)


def _region(inst: Instrument, name: str) -> tuple[Roi, float]:
    cam: Any = inst.camera
    box = cam.scene.regions[name]
    return Roi(*box), float(cam.focus_position_mm(box))


def _go(inst: Instrument, position_mm: float) -> None:
    inst.stage.travel_to(position_mm)
    inst.stage.moves = 0


class Scaled(OracleEstimator):
    """Reads every blur `scale` times the truth: a texture the calibration did not see."""

    scale = 1.0

    def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
        return super().predict(image, bit_depth) * np.float32(self.scale)


def _scaled(inst: Instrument, roi: Roi, scale: float) -> Scaled:
    est = Scaled(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    est.scale = scale
    return est


def test_fit_peak_recovers_the_model_peak_from_three_reads() -> None:
    truth = PeakFit(z0_mm=1.23, height_log=2.0, decay=1.4, width_mm=0.1, rms_log=0.0)
    points = [(z, truth.log_measure(z)) for z in (0.5, 1.1, 1.3)]
    fit = fit_peak(points, 0.1)
    assert fit is not None
    assert fit.z0_mm == pytest.approx(1.23, abs=1e-3)
    assert fit.decay == pytest.approx(1.4, rel=1e-2)
    rising = fit_peak([(0.0, 1.0), (0.1, 1.5), (0.2, 2.0)], 0.1)
    assert rising is not None and rising.z0_mm > 0.2  # beyond the reads: not bracketed


@pytest.mark.parametrize("offset_dof", [-6.0, 6.0])
@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_hybrid_lands_within_half_a_dof_where_the_jump_misses(
    inst: Instrument, cal: Calibration, offset_dof: float, scale: float
) -> None:
    """A blur read 20 % low or 25 % high: the jump misses by 1-1.5 DOF, the hybrid does not."""
    roi, z0 = _region(inst, "D")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm
    est = _scaled(inst, roi, scale)
    _go(inst, z0 + offset_dof * dof)
    jump = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior"))
    assert abs(jump.final_mm - z0) >= 0.9 * dof  # the single jump misses
    _go(inst, z0 + offset_dof * dof)
    result = autofocus_hybrid(inst, roi, est, cal, HdmeOptions("prior"))
    assert abs(result.final_mm - z0) <= 0.5 * dof, json.dumps(result.to_json())
    assert result.method == "hybrid"
    assert result.direction is not None and result.direction.endswith("+refined")
    assert result.refine is not None and result.refine["outcome"] == "refined"
    assert 3 <= result.captures <= 5 and result.moves == inst.stage.moves
    reads = [m for m in result.measurements if "log_measure" in m]
    assert len(reads) == result.captures  # the start frame's measure is one of the readings


def test_hybrid_on_the_flat_bottom_of_the_v(inst: Instrument) -> None:
    """An estimator with a blur floor cannot place a landing within 2 DOF of focus; the
    focus measure can."""
    from hdme_focus.calibration.fit import fit_vcurve
    from hdme_focus.calibration.model import SweepSource, build_calibration

    floor_px, scene_floor_px, scale = 2.5, 2.2, 1.15
    roi, z0 = _region(inst, "background")
    cam: Any = inst.camera
    x, y, w, h = roi.as_tuple()
    z = np.arange(0.3, 2.71, 0.05)
    truth = [float(np.median(cam.true_sigma_px(float(p))[y : y + h, x : x + w])) for p in z]
    fit = fit_vcurve(z, [float(np.hypot(t, floor_px)) for t in truth])
    cal = build_calibration(
        [("background", roi.as_tuple(), fit)],
        lens=inst.config.optics.lens(),
        sweep=SweepSource(path="floored", frames=len(z), range_mm=(0.3, 2.7)),
        estimator=OracleEstimator.name,
        frame_size_px=SIZE,
    )
    dof = cal.rois[0].dof_mm

    class Floored(OracleEstimator):
        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            t = super().predict(image, bit_depth)
            return np.hypot(scale * t, scene_floor_px).astype(np.float32)

    est = Floored(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    for offset in (-6.0, 6.0):
        _go(inst, z0 + offset * dof)
        jump = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior"))
        assert abs(jump.final_mm - z0) > 0.5 * dof
        _go(inst, z0 + offset * dof)
        result = autofocus_hybrid(inst, roi, est, cal, HdmeOptions("prior"))
        assert abs(result.final_mm - z0) <= 0.5 * dof, json.dumps(result.to_json())


def test_disagreeing_readings_are_refused_or_searched(inst: Instrument, cal: Calibration) -> None:
    """The blur reads half of what it is: the focus measure peaks far from the landing."""
    roi, z0 = _region(inst, "background")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm
    est = _scaled(inst, roi, 0.5)
    start = z0 + 8 * dof
    _go(inst, start)
    with pytest.raises(AutofocusRefused, match="disagree") as err:
        refuse = RefineOptions(fallback="refuse")
        autofocus_hybrid(inst, roi, est, cal, HdmeOptions("prior"), refuse)
    refused = err.value.result
    assert refused is not None and refused.refine is not None
    assert refused.refine["outcome"] == "refused"
    assert inst.stage.min_mm <= inst.stage.position_mm() <= inst.stage.max_mm
    # the default falls back to a bounded Brent search, which finds the focus
    _go(inst, start)
    result = autofocus_hybrid(inst, roi, est, cal, HdmeOptions("prior"))
    assert result.refine is not None and result.refine["outcome"] == "brent"
    assert result.direction is not None and result.direction.endswith("+brent")
    assert abs(result.final_mm - z0) <= 0.5 * dof


def test_focus_beyond_the_soft_limit_is_never_reported(tmp_path: Path) -> None:
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=SIZE[0], height_px=SIZE[1]),
        stage=SimStageConfig(min_mm=0.0, max_mm=1.5),
    )
    with open_instrument(cfg) as inst:
        cal = truth_calibration(inst, ["D"])
        roi, z0 = _region(inst, "D")  # focus at about 1.63 mm, beyond max_mm
        assert z0 > 1.5
        dof = cal.rois[0].dof_mm
        est = _scaled(inst, roi, 0.9)
        # limits calibrated wider than the stage: the jump's far candidate is outside
        _go(inst, 1.5 - 6 * dof)
        with pytest.raises(AutofocusRefused) as err:
            autofocus_hybrid(inst, roi, est, cal, HdmeOptions("prior"))
        result = err.value.result
        assert result is not None and result.refused
        assert inst.stage.position_mm() <= 1.5 and result.final_mm <= 1.5


def _flat_scene_config(tmp_path: Path) -> InstrumentConfig:
    """A user scene whose right half is a blank wall."""
    w, h = SIZE
    rng = np.random.default_rng(0)
    tex = np.full((h, w), 128, np.uint8)
    tex[:, : w // 2] = rng.integers(30, 225, (h, w // 2), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "wall.png"), tex)
    np.save(tmp_path / "depth.npy", np.full((h, w), 1300.0))
    return InstrumentConfig(
        camera=CameraConfig(width_px=w, height_px=h),
        scene=SceneConfig(name="image", image=tmp_path / "wall.png", depth=tmp_path / "depth.npy"),
        paths=PathsConfig(output_dir=tmp_path / "out"),
    )


def test_a_blank_region_read_as_blurred_is_refused_by_the_focus_measure(tmp_path: Path) -> None:
    """An estimator that reports a blur on a blank wall: the measure shows nothing to focus."""
    with open_instrument(_flat_scene_config(tmp_path)) as inst:
        cal = truth_calibration(inst)
        flat = Roi(120, 40, 48, 48)

        class Confident(OracleEstimator):
            def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
                return np.full(np.asarray(image).shape[:2], 3.0, np.float32)

        est = Confident(inst.camera, flat.as_tuple())  # type: ignore[arg-type]
        _go(inst, 1.6)
        with pytest.raises(AutofocusRefused, match="too little texture"):
            autofocus_hybrid(inst, flat, est, cal, HdmeOptions("prior"))


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from hdme_focus.instrument import devices

    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=SIZE[0], height_px=SIZE[1]),
        paths=PathsConfig(output_dir=tmp_path / "out"),
    )
    config = tmp_path / "instrument.toml"
    config.write_text(to_toml(cfg))
    opened: list[Instrument] = []
    real_open = devices.open_instrument

    def recording_open(c: InstrumentConfig) -> Instrument:
        opened.append(real_open(c))
        return opened[-1]

    monkeypatch.setattr(devices, "open_instrument", recording_open)
    with real_open(cfg) as inst:
        cal = truth_calibration(inst)
    cal.save(tmp_path / "out" / "calibration.json")
    box = cal.roi_named("D").roi
    assert box is not None

    class LazyScaled:
        name = OracleEstimator.name
        sigma_max_px = OracleEstimator.sigma_max_px

        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            est = Scaled(opened[-1].camera, box)  # type: ignore[arg-type]
            est.scale = 0.8
            return est.predict(image, bit_depth)

    monkeypatch.setattr("hdme_focus.cli.focus_cmd.load_estimator", lambda *a, **k: LazyScaled())
    return {"config": str(config), "roi": ",".join(map(str, box)), "cal": cal}


def test_cli_refines_by_default_and_not_with_no_refine(cli_config: dict[str, Any]) -> None:
    z0 = cli_config["cal"].roi_named("D").z0_mm
    dof = cli_config["cal"].roi_named("D").dof_mm
    base = ["autofocus", "--roi", cli_config["roi"], "--json", "-c", cli_config["config"]]
    single = runner.invoke(app, [*base, "--no-refine"])
    assert single.exit_code == 0, single.output
    one = json.loads(single.stdout)
    assert one["method"] == "hdme" and one["captures"] == 1
    hybrid = runner.invoke(app, base)
    assert hybrid.exit_code == 0, hybrid.output
    data = json.loads(hybrid.stdout)
    assert data["method"] == "hybrid" and data["refine"]["outcome"] == "refined"
    assert abs(data["final_mm"] - z0) <= 0.5 * dof
    assert abs(data["final_mm"] - z0) < abs(one["final_mm"] - z0)
    line = runner.invoke(app, [*base[:-3], "-c", cli_config["config"]])
    assert "autofocus hybrid/auto" in line.stdout and "+refined" in line.stdout


def test_cli_max_tries_needs_no_refine(cli_config: dict[str, Any]) -> None:
    args = ["autofocus", "--roi", cli_config["roi"], "--max-tries", "2"]
    result = runner.invoke(app, [*args, "-c", cli_config["config"]])
    assert result.exit_code == 2 and "--no-refine" in result.stderr


# --------------------------------------------------------------------------- global calibration


@pytest.mark.parametrize("offset_dof", [-5.0, 5.0])
def test_a_region_the_calibration_never_saw_uses_the_global_one_and_says_so(
    inst: Instrument, offset_dof: float
) -> None:
    cal = truth_calibration(inst, ["H", "M"])  # D was never calibrated
    roi, z0 = _region(inst, "D")
    assert cal.for_roi(roi.as_tuple())[1] == 0.0
    dof = cal.for_roi(None)[0].dof_mm
    _go(inst, z0 + offset_dof * dof)
    est = _scaled(inst, roi, 1.0)
    result = autofocus_hybrid(inst, roi, est, cal, HdmeOptions("probe"))
    assert result.calibration_region == "all-regions"
    assert result.calibration_note is not None and "global calibration over 2" in (
        result.calibration_note
    )
    assert "global calibration" in result.summary_line()
    assert abs(result.final_mm - z0) <= 0.5 * dof, json.dumps(result.to_json())


def test_global_calibration_on_request_ignores_the_region_fit(
    inst: Instrument, cal: Calibration
) -> None:
    roi, z0 = _region(inst, "D")
    _go(inst, z0 + 0.5)
    est = _scaled(inst, roi, 1.0)
    own = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior"))
    assert own.calibration_region == "D" and own.calibration_note is None
    _go(inst, z0 + 0.5)
    other = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior", global_calibration=True))
    assert other.calibration_region == "all-regions"
    assert other.calibration_note is not None and "asked for" in other.calibration_note


def test_an_unreadable_first_blur_falls_back_to_a_bounded_search(
    inst: Instrument, cal: Calibration
) -> None:
    """A first reading refused for low confidence (the region has texture): the jump alone
    refuses, the hybrid searches around the start within the soft limits and finds focus."""
    roi, z0 = _region(inst, "background")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm

    est = _scaled(inst, roi, 1.0)
    strict = HdmeOptions("prior", thresholds=Thresholds(min_confidence=1.01))  # never enough
    _go(inst, z0 + 4 * dof)
    with pytest.raises(AutofocusRefused, match="low-confidence"):
        autofocus_hdme(inst, roi, est, cal, strict)
    result = autofocus_hybrid(inst, roi, est, cal, strict)
    assert result.refine is not None and result.refine["outcome"] == "brent"
    assert result.direction == "unread+brent" and result.refused is None
    assert abs(result.final_mm - z0) <= 0.5 * dof
    assert inst.stage.min_mm <= result.final_mm <= inst.stage.max_mm
