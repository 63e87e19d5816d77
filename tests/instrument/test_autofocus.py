"""Autofocus on the simulator: one capture and one move, direction strategies, refusals, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import ShippedBench
from sim_oracle import OracleEstimator, truth_calibration
from typer.testing import CliRunner

from hdme_focus.calibration.model import Calibration
from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, InstrumentConfig, PathsConfig, SceneConfig, to_toml
from hdme_focus.core.roi import Roi
from hdme_focus.estimation.base import UNINFORMED_SHARE, DefocusEstimate, confidence_from_scale
from hdme_focus.instrument import devices
from hdme_focus.instrument.autofocus import HdmeOptions, autofocus_hdme
from hdme_focus.instrument.devices import Instrument, open_instrument
from hdme_focus.instrument.prior import load_state, state_path
from hdme_focus.instrument.search import SearchOptions, autofocus_brent, autofocus_sweep
from hdme_focus.instrument.session import AutofocusRefused

runner = CliRunner()

SIZE = (192, 144)


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


# --------------------------------------------------------------------------- hdme


@pytest.mark.parametrize("name", ["background", "D"])
@pytest.mark.parametrize("offset_dof", [-7.0, 6.0])
def test_prior_lands_in_focus_with_one_capture_and_one_move(
    inst: Instrument, cal: Calibration, name: str, offset_dof: float
) -> None:
    roi, z0 = _region(inst, name)
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm
    _go(inst, z0 + offset_dof * dof)
    est = OracleEstimator(inst.camera, roi.as_tuple(), noise_px=0.05)  # type: ignore[arg-type]
    result = autofocus_hdme(inst, roi, est, cal, HdmeOptions(strategy="prior"))
    assert abs(result.final_mm - z0) <= 0.5 * dof
    assert (result.captures, result.moves) == (1, 1)
    assert result.direction in ("prior", "limits") and not result.ambiguous
    assert inst.stage.moves == 1


@pytest.mark.parametrize("offset_dof", [-5.0, -1.5, 1.5, 5.0])
def test_probe_finds_the_side_without_any_prior(
    inst: Instrument, cal: Calibration, offset_dof: float
) -> None:
    roi, z0 = _region(inst, "D")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm
    _go(inst, z0 + offset_dof * dof)
    est = OracleEstimator(inst.camera, roi.as_tuple(), noise_px=0.05)  # type: ignore[arg-type]
    # a prior that knows nothing: the probe alone must decide
    opts = HdmeOptions(strategy="probe", prior_uncertainty_mm=100.0)
    result = autofocus_hdme(inst, roi, est, cal, opts)
    assert result.direction == "probe"
    assert abs(result.final_mm - z0) <= 0.5 * dof
    assert (result.captures, result.moves) == (2, 2)


def test_auto_uses_the_prior_when_unambiguous_and_probes_otherwise(
    inst: Instrument, cal: Calibration
) -> None:
    roi, z0 = _region(inst, "D")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm
    est = OracleEstimator(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    _go(inst, z0 - 5 * dof)
    clear = autofocus_hdme(inst, roi, est, cal, HdmeOptions(strategy="auto"))
    assert (clear.direction, clear.captures) == ("prior", 1)
    _go(inst, z0 - 5 * dof)
    vague = autofocus_hdme(inst, roi, est, cal, HdmeOptions("auto", prior_uncertainty_mm=20 * dof))
    assert (vague.direction, vague.captures, vague.moves) == ("probe", 2, 2)
    assert abs(vague.final_mm - z0) <= 0.5 * dof


def test_a_candidate_outside_the_soft_limits_settles_the_direction(inst: Instrument) -> None:
    cal = truth_calibration(inst, ["background"])  # focus at 1.0 mm
    roi, z0 = _region(inst, "background")
    _go(inst, 0.3)  # the other candidate, 0.3 - 0.7 mm, is below min_mm = 0
    est = OracleEstimator(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    result = autofocus_hdme(inst, roi, est, cal, HdmeOptions(strategy="probe"))
    assert result.direction == "limits" and result.captures == 1
    assert result.final_mm == pytest.approx(z0, abs=0.02)


def test_verify_and_retry_fix_a_biased_estimate(inst: Instrument, cal: Calibration) -> None:
    roi, z0 = _region(inst, "background")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm
    _go(inst, z0 + 8 * dof)

    class Biased(OracleEstimator):
        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            return super().predict(image, bit_depth) * np.float32(0.8)  # reads 20% low

    est = Biased(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    once = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior", verify=True))
    assert once.in_focus is False and once.tries == 1 and once.captures == 2
    assert once.verified_sigma_px is not None and once.verified_sigma_px > 0.5
    _go(inst, z0 + 8 * dof)
    retried = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior", max_tries=3))
    assert retried.in_focus is True and retried.tries >= 2
    assert abs(retried.final_mm - z0) <= 0.5 * dof


def floored_bench(inst: Instrument) -> tuple[Roi, float, Calibration, OracleEstimator]:
    """An estimator with a blur floor (as real ones have) and a 15 % scale error.

    Calibrated on a scene whose texture reads as 2.5 px in focus; this one reads
    2.2 px and its blur 15 % high: a jump overshoots, and a reading next to focus
    (the flat bottom of the V) cannot see it. Returns (roi, z0, calibration, estimator).
    """
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

    class Floored(OracleEstimator):
        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            truth = super().predict(image, bit_depth)
            return np.hypot(scale * truth, scene_floor_px).astype(np.float32)

    return roi, z0, cal, Floored(cam, roi.as_tuple())


def test_retry_reads_the_slope_when_the_verify_lands_on_the_flat_bottom(
    inst: Instrument,
) -> None:
    """An estimator with a blur floor (as real ones have) cannot see a small residual."""
    roi, z0, cal, est = floored_bench(inst)
    dof = cal.rois[0].dof_mm
    _go(inst, z0 + 6 * dof)
    once = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior", verify=True))
    assert (once.captures, once.moves) == (2, 1)  # verify only: no slope capture
    assert abs(once.final_mm - z0) > 0.5 * dof  # the 15 % scale error overshoots ...
    assert once.in_focus  # ... and the verify, on the flat bottom of the V, cannot see it
    _go(inst, z0 + 6 * dof)
    fixed = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior", max_tries=2))
    assert abs(fixed.final_mm - z0) <= 0.5 * dof, json.dumps(fixed.to_json())
    assert (fixed.captures, fixed.moves) == (4, 3)  # first, verify, slope, verify
    slope = fixed.measurements[2]["position_mm"]
    assert abs(slope - z0) >= 1.5 * dof  # read where the V is steeper than at the landing


def test_success_is_remembered_as_the_next_prior(
    inst: Instrument, cal: Calibration, tmp_path: Path
) -> None:
    roi, z0 = _region(inst, "M")
    state = state_path(tmp_path)
    est = OracleEstimator(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    _go(inst, z0 + 0.4)
    first = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior", verify=True, state_file=state))
    assert first.prior is not None and first.prior["source"] == "calibration"
    [entry] = load_state(state)
    assert entry["roi"] == list(roi.as_tuple())
    assert entry["position_mm"] == pytest.approx(first.final_mm)
    _go(inst, z0 - 0.4)
    second = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior", state_file=state))
    assert second.prior is not None and second.prior["source"] == "last-focus"


# --------------------------------------------------------------------------- refusals


def _flat_scene_config(tmp_path: Path) -> InstrumentConfig:
    """A user scene whose right half is a blank wall: no texture to measure blur on."""
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


def test_flat_region_is_refused_and_the_stage_stays(tmp_path: Path) -> None:
    cfg = _flat_scene_config(tmp_path)
    with open_instrument(cfg) as inst:
        cal = truth_calibration(inst)
        _go(inst, 1.6)
        flat = Roi(120, 40, 48, 48)
        est = OracleEstimator(inst.camera, flat.as_tuple())  # type: ignore[arg-type]
        with pytest.raises(AutofocusRefused, match="too little texture") as err:
            autofocus_hdme(inst, flat, est, cal, HdmeOptions("auto"))
        assert inst.stage.position_mm() == 1.6 and inst.stage.moves == 0
        assert err.value.result is not None and err.value.result.captures == 1


class _Unsure(OracleEstimator):
    """Reads the true blur but, like a network on a field it cannot read, reports a
    learned error scale near the know-nothing level everywhere."""

    sigma_max_px = 10.0  # a network's range: its know-nothing error is finite

    def estimate(self, image: Any, bit_depth: int | None = None, **kw: Any) -> DefocusEstimate:
        sigma = self.predict(image, bit_depth, **kw)
        scale = np.full(sigma.shape, 0.9 * UNINFORMED_SHARE * self.sigma_max_px, np.float32)
        return DefocusEstimate(sigma, confidence_from_scale(scale, self.sigma_max_px), scale)


def test_a_region_the_estimator_says_it_cannot_read_is_refused_though_textured(
    inst: Instrument, cal: Calibration
) -> None:
    """The learned confidence, not the texture mask, refuses: the region has texture."""
    roi, _ = _region(inst, "D")
    _go(inst, 1.2)
    est = _Unsure(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    with pytest.raises(AutofocusRefused, match="its own confidence is too low") as err:
        autofocus_hdme(inst, roi, est, cal, HdmeOptions("auto"))
    assert inst.stage.position_mm() == 1.2 and inst.stage.moves == 0
    assert err.value.result is not None and err.value.result.captures == 1
    sure = OracleEstimator(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    assert autofocus_hdme(inst, roi, sure, cal, HdmeOptions("auto")).moves == 1


def test_saturated_region_is_refused_and_the_stage_stays() -> None:
    cfg = InstrumentConfig(camera=CameraConfig(width_px=SIZE[0], height_px=SIZE[1], gain=8.0))
    with open_instrument(cfg) as inst:
        cal = truth_calibration(inst)
        roi, _ = _region(inst, "D")
        _go(inst, 1.2)
        est = OracleEstimator(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
        with pytest.raises(AutofocusRefused, match="saturated"):
            autofocus_hdme(inst, roi, est, cal, HdmeOptions("auto"))
        assert inst.stage.position_mm() == 1.2 and inst.stage.moves == 0


def test_nan_estimate_is_refused(inst: Instrument, cal: Calibration) -> None:
    roi, _ = _region(inst, "D")
    _go(inst, 1.2)

    class Broken(OracleEstimator):
        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            return np.full(np.asarray(image).shape[:2], np.nan, np.float32)

    with pytest.raises(AutofocusRefused):
        autofocus_hdme(inst, roi, Broken(inst.camera, roi.as_tuple()), cal)  # type: ignore[arg-type]
    assert inst.stage.moves == 0


def test_roi_outside_the_frame_is_refused_before_moving(inst: Instrument, cal: Calibration) -> None:
    _go(inst, 1.2)
    roi = Roi(180, 10, 40, 40)
    from hdme_focus.core.roi import RoiError

    with pytest.raises(RoiError, match="outside the 192x144 frame"):
        autofocus_hdme(inst, roi, OracleEstimator(inst.camera, (0, 0, 1, 1)), cal)  # type: ignore[arg-type]
    assert inst.stage.moves == 0


# --------------------------------------------------------------------------- classical


@pytest.mark.parametrize("method", [autofocus_brent, autofocus_sweep])
def test_classical_searches_find_focus_with_many_captures(
    inst: Instrument, cal: Calibration, method: Any
) -> None:
    roi, z0 = _region(inst, "background")
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm
    start = z0 + 6 * dof
    _go(inst, start)
    opts = SearchOptions(range_mm=(start - 12 * dof, start + 12 * dof), xatol_mm=0.1 * dof)
    result = method(inst, roi, opts)
    assert abs(result.final_mm - z0) <= 0.5 * dof
    assert result.captures >= 8 and result.moves >= result.captures
    assert result.device_time_s > 0


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Config file + calibration on disk; the estimator is the oracle, instruments recorded."""
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

    class LazyOracle:
        """The oracle of whichever instrument the command opened (opened after loading)."""

        name = OracleEstimator.name
        sigma_max_px = OracleEstimator.sigma_max_px

        def _now(self) -> OracleEstimator:
            return OracleEstimator(opened[-1].camera, box, noise_px=0.05)  # type: ignore[arg-type]

        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            return self._now().predict(image, bit_depth)

        def estimate(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            return self._now().estimate(image, bit_depth)

    monkeypatch.setattr("hdme_focus.cli.focus_cmd.load_estimator", lambda *a, **k: LazyOracle())
    return {"config": config, "opened": opened, "roi": ",".join(map(str, box)), "cal": cal}


def test_cli_autofocus_json_reports_counts_positions_and_times(cli_setup: dict[str, Any]) -> None:
    args = [
        "autofocus",
        "--roi",
        cli_setup["roi"],
        "--verify",
        "--no-refine",
        "--json",
        "-c",
        str(cli_setup["config"]),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["captures"] == 2 and data["moves"] == 1
    assert data["start_mm"] == pytest.approx(1.0)  # the simulator's power-on position
    assert data["final_mm"] == pytest.approx(cli_setup["cal"].roi_named("D").z0_mm, abs=0.03)
    assert data["in_focus"] is True and data["verified_sigma_px"] < 0.6
    assert data["device_time_s"] > 0 and data["compute_time_s"] > 0
    state = load_state(state_path(Path(cli_setup["config"]).parent / "out"))
    assert state and state[-1]["position_mm"] == pytest.approx(data["final_mm"])


def test_cli_autofocus_one_line_summary(cli_setup: dict[str, Any]) -> None:
    result = runner.invoke(
        app,
        ["autofocus", "--roi", cli_setup["roi"], "--no-refine", "-c", str(cli_setup["config"])],
    )
    assert result.exit_code == 0, result.output
    [line] = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert "1 capture" in line and "1 move" in line and "device" in line and "compute" in line


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.write_text("{oops"), "not readable JSON"),
        (lambda p: p.write_text(json.dumps({"format": "x"})), "not an hdme-focus calibration"),
        (lambda p: p.unlink(), "no calibration file"),
        (
            lambda p: p.write_text(p.read_text().replace('"f_number": 8.0', '"f_number": 2.8')),
            "does not match this instrument",
        ),
    ],
)
def test_cli_bad_calibration_is_one_clear_line_and_no_motion(
    cli_setup: dict[str, Any], edit: Any, message: str
) -> None:
    path = Path(cli_setup["config"]).parent / "out" / "calibration.json"
    edit(path)
    result = runner.invoke(
        app, ["autofocus", "--roi", cli_setup["roi"], "-c", str(cli_setup["config"])]
    )
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert cli_setup["opened"] == []  # refused before the instrument was opened


@pytest.mark.parametrize(
    ("roi", "message"),
    [
        ("150,10,64,64", "outside the 192x144 frame"),
        ("10,10,0,20", "zero or negative area"),
        ("10,10,20", "expected 4 comma-separated integers"),
    ],
)
def test_cli_bad_roi_is_refused_before_anything_moves(
    cli_setup: dict[str, Any], roi: str, message: str
) -> None:
    for method in ("hdme", "brent"):
        result = runner.invoke(
            app, ["autofocus", "--roi", roi, "--method", method, "-c", str(cli_setup["config"])]
        )
        assert result.exit_code == 2
        assert message in result.stderr
    assert cli_setup["opened"] == []


def test_cli_refusal_exits_4_and_leaves_the_stage(
    cli_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Flat(OracleEstimator):
        def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
            return np.full(np.asarray(image).shape[:2], np.nan, np.float32)

    monkeypatch.setattr("hdme_focus.cli.focus_cmd.load_estimator", lambda *a, **k: Flat(None))  # type: ignore[arg-type]
    result = runner.invoke(
        app, ["autofocus", "--roi", cli_setup["roi"], "-c", str(cli_setup["config"])]
    )
    assert result.exit_code == 4
    assert "refused to move" in result.stderr
    [inst] = cli_setup["opened"]
    assert inst.stage.moves == 0 and inst.stage.position_mm() == pytest.approx(1.0)


# --------------------------------------------------------------------------- shipped model


@pytest.mark.slow
@pytest.mark.parametrize("offset_dof", [-5.0, 5.0])
def test_shipped_model_autofocus_from_both_sides(
    offset_dof: float, shipped_bench: ShippedBench
) -> None:
    """README-level: sweep with the shipped model, calibrate, focus a region from either side."""
    est, cal = shipped_bench.estimator, shipped_bench.calibration
    with open_instrument(shipped_bench.config) as inst:
        roi, z0 = _region(inst, "background")
        dof = cal.for_roi(roi.as_tuple())[0].dof_mm
        _go(inst, z0 + offset_dof * dof)
        result = autofocus_hdme(inst, roi, est, cal, HdmeOptions("auto", max_tries=2))
    assert abs(result.final_mm - z0) <= 0.5 * dof, json.dumps(result.to_json())
    assert result.captures <= 4  # first, verify, one on the slope, verify
