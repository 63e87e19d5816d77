"""The hybrid autofocus: HDME jump, then the focus-measure refinement (instrument/hybrid.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sim_oracle import OracleEstimator, truth_calibration
from typer.testing import CliRunner

from hdme_focus.calibration.model import Calibration
from hdme_focus.cli.app import app
from hdme_focus.config import (
    CameraConfig,
    InstrumentConfig,
    SimStageConfig,
)
from hdme_focus.core.frame import to_gray_float
from hdme_focus.core.roi import Roi
from hdme_focus.estimation.base import roi_sigma
from hdme_focus.instrument.autofocus import HdmeOptions, Thresholds, autofocus_hdme
from hdme_focus.instrument.devices import Instrument, open_instrument
from hdme_focus.instrument.hybrid import PeakFit, RefineOptions, autofocus_hybrid, fit_peak
from hdme_focus.instrument.session import AutofocusRefused

# the benches of the single-capture tests: the CLI one (a fixture), the floored estimator
from .test_autofocus import (  # noqa: F401
    SIZE,
    _flat_scene_config,
    _go,
    _region,
    cli_setup,
    floored_bench,
)

runner = CliRunner()


@pytest.fixture
def inst() -> Iterator[Instrument]:
    """The default simulated bench (letters scene) at SIZE."""
    with open_instrument(
        InstrumentConfig(camera=CameraConfig(width_px=SIZE[0], height_px=SIZE[1]))
    ) as instrument:
        yield instrument


@pytest.fixture
def cal(inst: Instrument) -> Calibration:
    """Fitted to the simulator's true blur."""
    return truth_calibration(inst)


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
    reads = [
        m
        for m in result.measurements
        if "log_measure" in m and m["position_mm"] != result.start_mm  # the start's is free
    ]
    assert len(reads) == result.captures - 1  # every capture after the jump's first


@pytest.mark.parametrize("offset_dof", [-7.0, -4.5, 4.5, 7.0])
def test_a_good_jump_from_far_is_refined_in_three_captures(
    inst: Instrument, cal: Calibration, offset_dof: float
) -> None:
    """The start frame, however far (within the model's range), is the third reading: one
    capture for the jump and two beside the landing, no read at the landing itself."""
    roi, z0 = _region(inst, "D")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm
    _go(inst, z0 + offset_dof * dof)
    result = autofocus_hybrid(inst, roi, _scaled(inst, roi, 1.0), cal, HdmeOptions("prior"))
    assert abs(result.final_mm - z0) <= 0.5 * dof, json.dumps(result.to_json())
    assert result.captures == 3, json.dumps(result.to_json())


def test_hybrid_on_the_flat_bottom_of_the_v(inst: Instrument) -> None:
    """An estimator with a blur floor cannot place a landing within 2 DOF of focus; the
    focus measure can."""
    roi, z0, cal, est = floored_bench(inst)
    dof = cal.rois[0].dof_mm
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
def cli_config(
    cli_setup: dict[str, Any],  # noqa: F811  (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """test_autofocus's CLI bench, its oracle reading every blur 20 % low."""
    opened: list[Instrument] = cli_setup["opened"]
    box = cli_setup["cal"].roi_named("D").roi

    class LazyScaled:
        name = OracleEstimator.name
        sigma_max_px = OracleEstimator.sigma_max_px

        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            return _scaled(opened[-1], Roi(*box), 0.8).predict(image, bit_depth)

        def estimate(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            return _scaled(opened[-1], Roi(*box), 0.8).estimate(image, bit_depth)

    monkeypatch.setattr("hdme_focus.cli.focus_cmd.load_estimator", lambda *a, **k: LazyScaled())
    return {**cli_setup, "config": str(cli_setup["config"])}


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


def _seen_contrast(
    inst: Instrument, cal: Calibration, gain: float, est: OracleEstimator
) -> Calibration:
    """The calibration with each region's (blur, contrast) curve from frames along its V,
    the contrast multiplied by `gain` (gain 20: every calibrated texture 20x stronger)."""
    rois = []
    for r in cal.rois:
        assert r.roi is not None
        pairs = []
        for off_dof in np.linspace(-8, 8, 9):
            _go(inst, r.z0_mm + off_dof * r.dof_mm)
            frame = inst.camera.capture()
            gray = to_gray_float(frame.image, frame.bit_depth)
            stats = roi_sigma(est.predict(frame.image, frame.bit_depth), gray, r.roi)
            pairs.append((stats.sigma_px, stats.contrast * gain))
        rois.append(r.model_copy(update={"contrast_curve": pairs}))
    return cal.model_copy(update={"rois": rois})


@pytest.mark.parametrize("gain", [1.0, 20.0])
def test_a_region_whose_texture_the_calibration_never_saw_is_refused(
    inst: Instrument, gain: float
) -> None:
    """Read with the global calibration, a region is focused when calibrated regions had a
    texture like it (gain 1: the same scene) and refused when every calibrated texture had
    20x its contrast: the jump does not move, the hybrid searches instead of trusting it."""
    roi, z0 = _region(inst, "D")
    est = _scaled(inst, roi, 1.0)
    cal = _seen_contrast(inst, truth_calibration(inst, ["H", "M"]), gain, est)
    dof = cal.for_roi(None)[0].dof_mm
    _go(inst, z0 + 4 * dof)
    if gain == 1.0:
        result = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior"))
        assert result.moves == 1 and result.calibration_region == "all-regions"
        return
    with pytest.raises(AutofocusRefused, match="outside what the calibration covers") as exc:
        autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior"))
    assert exc.value.result is not None and exc.value.result.moves == 0
    _go(inst, z0 + 4 * dof)
    result = autofocus_hybrid(inst, roi, est, cal, HdmeOptions("prior"))
    assert result.refine is not None and result.refine["outcome"] == "brent"
    assert "outside what the calibration covers" in result.refine["first_reading_refused"]
    assert abs(result.final_mm - z0) <= 0.5 * dof


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


def test_a_bump_in_a_flat_focus_measure_is_not_taken_for_focus(
    inst: Instrument, cal: Calibration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far from focus the focus measure is nearly flat, and a few reads of it can show a
    middle one highest. A blur reading that says "near focus" (wrong) lands the jump
    there; the refinement accepted the camera-noise bump around the landing as the
    peak and reported it refined (seen once on the benchmark, hdme-lite-conf, 8.7 DOF
    off). It must search on, or refuse, never report the bump."""
    from hdme_focus.instrument import hybrid

    roi, z0 = _region(inst, "background")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm

    class SaysNearFocus(OracleEstimator):
        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            return np.full_like(super().predict(image, bit_depth), 0.6)

    est = SaysNearFocus(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    start = z0 + 8 * dof
    _go(inst, start)
    landing = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior")).final_mm
    towards_focus = float(np.sign(z0 - landing))

    def flat_with_a_bump(frame: Any, region: Roi, measure: str) -> float:
        """What the refinement reads: a noise-sized bump (0.08 in log) at the landing on a
        measure rising 0.04 per DOF towards focus, as it does 7 DOF out."""
        z = hybrid.frame_position_mm(frame)
        bump = 0.08 * float(np.exp(-(((z - landing) / dof) ** 2)))
        return -7.0 + bump + 0.04 * towards_focus * (z - landing) / dof

    monkeypatch.setattr(hybrid, "log_measure", flat_with_a_bump)
    _go(inst, start)
    try:
        result = autofocus_hybrid(inst, roi, est, cal, HdmeOptions("prior"))
    except AutofocusRefused as exc:  # refusing is allowed: it says so
        assert exc.result is not None and "refined" not in str(exc.result.direction)
        return
    assert "refined" not in str(result.direction)  # was "prior+refined", 7.0 DOF off
    assert abs(result.final_mm - z0) <= 0.5 * dof  # the fallback search found focus
