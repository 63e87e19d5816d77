"""Calibration: robust V-curve fits, thin-lens conversions, the calibration file and `calibrate`."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from sim_oracle import OracleEstimator
from typer.testing import CliRunner

from hdme_focus.calibration.fit import (
    CalibrationError,
    check_fit,
    fit_problems,
    fit_vcurve,
    focus_position_map_mm,
    object_distance_for_focus_mm,
    object_distance_now_mm,
    relate_to_thin_lens,
    vcurve_sigma_px,
)
from hdme_focus.calibration.model import (
    Calibration,
    CalibrationFileError,
    SweepSource,
    build_calibration,
    load_calibration,
)
from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, InstrumentConfig, to_toml
from hdme_focus.core.frame import Frame
from hdme_focus.estimation.registry import create_estimator
from hdme_focus.instrument.calibrate import calibrate_sweep
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.optics import ThinLens
from hdme_focus.records import SweepRecord

runner = CliRunner()

IMAGE_LENS = ThinLens(50.0, 8.0, 5.0, 51.0, "image")
OBJECT_LENS = ThinLens(50.0, 5.6, 5.0, 100.0, "object")


# --------------------------------------------------------------------------- V-curve fit


@pytest.mark.parametrize("seed", range(8))
def test_fit_recovers_parameters_despite_noise_and_outliers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    z0, k, s0 = rng.uniform(0.8, 2.2), rng.uniform(3.0, 9.0), rng.uniform(0.4, 1.2)
    z = np.linspace(0.0, 3.0, 61)  # 0.05 mm steps: a few points inside the minimum
    sigma = vcurve_sigma_px(z, z0, k, s0) + rng.normal(0.0, 0.1, z.size)
    bad = rng.choice(z.size, 5, replace=False)
    sigma[bad] += rng.choice([-1, 1], 5) * rng.uniform(2.0, 6.0, 5)  # reflections, failures
    sigma[bad[0]] = np.nan  # a frame with no estimate
    fit = fit_vcurve(z, sigma)
    assert fit.z0_mm == pytest.approx(z0, abs=0.02)
    assert fit.k_px_per_mm == pytest.approx(k, rel=0.03)
    assert fit.sigma0_px == pytest.approx(s0, abs=0.15)
    assert not fit.inliers[bad].any()  # every planted outlier was rejected or excluded
    assert fit.r2 > 0.99
    assert fit_problems(fit) == []


def test_fit_ignores_readings_at_the_estimator_ceiling() -> None:
    z = np.linspace(0.0, 3.0, 61)
    sigma = np.minimum(vcurve_sigma_px(z, 1.4, 8.0, 0.6), 10.0)  # estimator saturates at 10 px
    clipped = fit_vcurve(z, sigma, max_sigma_px=9.0)
    assert clipped.k_px_per_mm == pytest.approx(8.0, rel=0.01)
    assert clipped.n_excluded > 10


def test_fit_trims_the_flat_tails_of_a_saturating_estimator() -> None:
    """An estimator that levels off at ~7 px below its nominal range bends the V's arms."""
    z = np.linspace(0.0, 3.0, 61)
    true = vcurve_sigma_px(z, 1.2, 8.0, 0.6)
    read = true / (1.0 + (true / 7.0) ** 6) ** (1 / 6)  # linear near focus, flat at ~7 px
    fit = fit_vcurve(z, read)
    assert fit.z0_mm == pytest.approx(1.2, abs=0.01)
    assert fit.k_px_per_mm == pytest.approx(8.0, rel=0.08)
    assert fit.n_excluded >= 20  # the flat tails
    straight = fit_vcurve(z, true)  # a true V keeps every point
    assert straight.n_excluded == 0


@pytest.mark.parametrize("seed", range(4))
def test_a_reading_that_compresses_far_out_gives_the_optics_slope_and_distance(seed: int) -> None:
    """Estimators read less blur than there is far from focus (hdme-lite tops out near 9 of
    10 px). A hyperbola through such a sweep bent its arms: k 17-20 % low here, and a far
    reading's distance rested on that bent slope. The compressed V-curve keeps both."""
    rng = np.random.default_rng(seed)
    z = np.arange(0.3, 2.71, 0.05)
    true = vcurve_sigma_px(z, 1.6, 8.4, 1.8)
    read = true / np.sqrt(1.0 + (true / 12.0) ** 2) + rng.normal(0.0, 0.15, z.size)
    fit = fit_vcurve(z, read, max_sigma_px=9.0)
    assert fit.saturation_px == pytest.approx(12.0, rel=0.15)
    assert fit.z0_mm == pytest.approx(1.6, abs=0.01)
    assert fit.k_px_per_mm == pytest.approx(8.4, rel=0.06)
    far = float(vcurve_sigma_px(2.4, 1.6, 8.4, 1.8, 12.0))  # a reading 0.8 mm out
    assert float(fit.distance_mm(far)) == pytest.approx(0.8, rel=0.08)
    plain = fit_vcurve(z, read, max_sigma_px=9.0, compression=False)
    assert plain.k_px_per_mm < 0.9 * 8.4  # what the hyperbola alone made of it


def test_an_uncompressed_sweep_fits_no_saturation() -> None:
    """A fourth parameter is not taken because it is there: a true V (noise only) and a
    hard-kneed estimator (a different shape, trimmed instead) keep the plain hyperbola."""
    z = np.linspace(0.0, 3.0, 61)
    rng = np.random.default_rng(3)
    noisy = vcurve_sigma_px(z, 1.2, 8.0, 0.6) + rng.normal(0.0, 0.1, z.size)
    assert fit_vcurve(z, noisy).saturation_px is None
    true = vcurve_sigma_px(z, 1.2, 8.0, 0.6)
    knee = true / (1.0 + (true / 7.0) ** 6) ** (1 / 6)
    assert fit_vcurve(z, knee).saturation_px is None


def test_a_reading_at_the_saturation_has_no_distance() -> None:
    """Any blur farther out reads the same: the distance is unbounded, never a number."""
    fit = fit_vcurve(
        np.arange(0.3, 2.71, 0.05),
        vcurve_sigma_px(np.arange(0.3, 2.71, 0.05), 1.6, 8.4, 1.8, 12.0),
        max_sigma_px=9.0,
    )
    assert fit.saturation_px is not None
    assert math.isinf(float(fit.distance_mm(fit.saturation_px + 0.1)))
    assert math.isnan(float(fit.distance_mm(math.nan)))


def test_fit_follows_the_steep_bottom_not_compressed_tails() -> None:
    """A weak estimator: a sharp V near focus, then blur readings that rise only slowly.

    The tails outnumber the bottom; a plain robust fit would reject the bottom as
    outliers. Growing from the minimum keeps the part that defines focus.
    """
    z = np.linspace(0.3, 2.7, 49)
    near = vcurve_sigma_px(z, 1.5, 12.0, 2.3)
    read = np.where(near < 5.0, near, 5.0 + 2.2 * (np.abs(z - 1.5) - 0.36))
    fit = fit_vcurve(z, read)
    assert fit.z0_mm == pytest.approx(1.5, abs=0.01)
    assert fit.k_px_per_mm == pytest.approx(12.0, rel=0.1)
    assert fit.sigma0_px == pytest.approx(2.3, abs=0.3)
    assert fit.range_mm[1] - fit.range_mm[0] < 1.2  # the tails are outside the model's range


def test_refuses_too_few_points_with_what_to_record() -> None:
    z = np.array([0.9, 1.0, 1.1, 1.2])
    fit = fit_vcurve(z, vcurve_sigma_px(z, 1.05, 5.0, 0.5))
    with pytest.raises(CalibrationError, match=r"only 4 usable points.*smaller --step"):
        check_fit(fit, "A")


def test_refuses_a_sweep_that_never_passes_focus() -> None:
    z = np.linspace(0.0, 1.0, 21)
    fit = fit_vcurve(z, vcurve_sigma_px(z, 1.6, 5.0, 0.5))
    problems = " ".join(fit_problems(fit))
    assert "no minimum inside the swept range" in problems
    assert "above" in problems  # the fix: extend the sweep past its upper end


def test_refuses_a_poor_fit() -> None:
    rng = np.random.default_rng(5)
    z = np.linspace(0.0, 3.0, 31)
    sigma = vcurve_sigma_px(z, 1.5, 2.0, 1.0) + rng.normal(0, 1.2, z.size)  # depth edge / junk
    assert any("poor fit" in p for p in fit_problems(fit_vcurve(z, sigma)))


# --------------------------------------------------------------------------- thin lens


@pytest.mark.parametrize("lens", [IMAGE_LENS, OBJECT_LENS], ids=["image", "object"])
def test_object_distance_and_focus_position_round_trip(lens: ThinLens) -> None:
    z0 = np.array([0.1, 0.9, 1.5, 2.7])
    u = object_distance_for_focus_mm(lens, z0)
    assert np.all(np.isfinite(u)) and np.all(u > lens.focal_length_mm)
    np.testing.assert_allclose(lens.focus_position_mm(u), z0, atol=1e-9)


@pytest.mark.parametrize("lens", [IMAGE_LENS, OBJECT_LENS], ids=["image", "object"])
def test_fitted_slope_matches_the_thin_lens(lens: ThinLens) -> None:
    """Fit the V-curve of blur rendered by the thin lens itself: k and D come back."""
    u = float(object_distance_for_focus_mm(lens, 1.5))
    z = np.linspace(1.2, 1.8, 31)
    fit = fit_vcurve(z, [float(lens.sigma_px(float(p), u)) for p in z])
    rel = relate_to_thin_lens(fit, lens)
    assert fit.z0_mm == pytest.approx(1.5, abs=1e-3)
    assert rel.object_distance_mm == pytest.approx(u, rel=1e-3)
    assert rel.k_ratio == pytest.approx(1.0, abs=0.01)
    assert rel.f_number_fit == pytest.approx(lens.f_number, rel=0.01)


@pytest.mark.parametrize("lens", [IMAGE_LENS, OBJECT_LENS], ids=["image", "object"])
@pytest.mark.parametrize("side", ["near", "far"])
def test_blur_to_object_distance_inverts_the_renderer(lens: ThinLens, side: str) -> None:
    z_now = 1.5
    z_focus = np.array([1.6, 1.9, 2.2]) if side == "near" else np.array([0.8, 1.1, 1.4])
    u_scene = object_distance_for_focus_mm(lens, z_focus)
    sigma = lens.sigma_px(z_now, u_scene)
    k = lens.slope_px_per_mm(float(u_scene[1]))
    zf = focus_position_map_mm(sigma, z_now, k, 0.0, side)  # type: ignore[arg-type]
    np.testing.assert_allclose(zf, z_focus, atol=0.02)
    u_now = object_distance_now_mm(lens, zf, z_now)
    expected = u_scene + (z_now if lens.setup == "object" else 0.0)
    np.testing.assert_allclose(u_now, expected, rtol=0.01)
    # "near" means nearer to the lens than the plane in focus now
    u_focused_now = float(object_distance_now_mm(lens, z_now, z_now))
    assert np.all((u_now < u_focused_now) if side == "near" else (u_now > u_focused_now))


# --------------------------------------------------------------------------- calibration file


def _calibration(estimator: str = "oracle-test-only") -> Calibration:
    z = np.linspace(0.5, 2.5, 41)
    fits = [
        ("A", (10, 10, 40, 40), fit_vcurve(z, vcurve_sigma_px(z, 1.2, 8.4, 0.6))),
        ("B", (100, 10, 40, 40), fit_vcurve(z, vcurve_sigma_px(z, 1.8, 8.3, 0.7))),
    ]
    return build_calibration(
        fits,
        lens=IMAGE_LENS,
        sweep=SweepSource(path="/data/sweep", frames=41, range_mm=(0.5, 2.5)),
        estimator=estimator,
        frame_size_px=(160, 120),
    )


def test_calibration_file_round_trip_keeps_units_source_and_estimator(tmp_path: Path) -> None:
    cal = _calibration()
    path = cal.save(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    assert data["format"] == "hdme-focus-calibration" and data["version"] == 1
    assert data["units"] == {"position": "mm", "sigma": "px", "slope": "px/mm", "distance": "mm"}
    assert data["sweep"]["path"] == "/data/sweep" and data["estimator"] == "oracle-test-only"
    back = load_calibration(path)
    assert back == cal
    a = back.roi_named("A")
    assert a.z0_mm == pytest.approx(1.2, abs=1e-3)
    assert a.object_distance_mm == pytest.approx(
        float(object_distance_for_focus_mm(IMAGE_LENS, a.z0_mm))
    )
    assert a.k_thin_lens_px_per_mm == pytest.approx(
        IMAGE_LENS.slope_px_per_mm(a.object_distance_mm)
    )


def test_a_compressed_curve_survives_the_file_and_older_files_still_load(tmp_path: Path) -> None:
    """The saturation is part of the curve: saved, loaded, used for the distance. A file
    written before it existed has none and reads as the plain hyperbola it was."""
    z = np.arange(0.3, 2.71, 0.05)
    fit = fit_vcurve(z, vcurve_sigma_px(z, 1.6, 8.4, 1.8, 12.0), max_sigma_px=9.0)
    cal = build_calibration(
        [("A", (0, 0, 50, 50), fit)],
        lens=IMAGE_LENS,
        sweep=SweepSource(path="/data/sweep", frames=len(z), range_mm=(0.3, 2.7)),
        estimator="oracle-test-only",
        frame_size_px=(64, 64),
    )
    back = load_calibration(cal.save(tmp_path / "cal.json"))
    a = back.roi_named("A")
    assert a.saturation_px == pytest.approx(12.0, rel=0.01)
    far = float(vcurve_sigma_px(2.4, 1.6, 8.4, 1.8, 12.0))
    assert a.distance_mm(far) == pytest.approx(0.8, rel=0.01)
    assert a.sigma_px(2.4) == pytest.approx(far, rel=0.01)
    data = json.loads((tmp_path / "cal.json").read_text())
    del data["rois"][0]["saturation_px"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = load_calibration(tmp_path / "old.json").roi_named("A")
    assert old.saturation_px is None
    assert old.distance_mm(far) == pytest.approx(
        math.sqrt(far**2 - old.sigma0_px**2) / old.k_px_per_mm
    )


def test_the_summary_for_an_unseen_region_is_one_regions_whole_curve() -> None:
    """k, sigma0 and the saturation trade off in each fit: medians taken one parameter at a
    time (the old summary) paired the median k with another region's saturation, a
    curve no region had. The summary is the region nearest the median k, whole."""
    z = np.arange(0.3, 2.71, 0.05)
    curves = {"A": (7.0, 0.8, 20.0), "B": (9.0, 1.5, None), "C": (17.0, 2.4, 7.0)}
    fits = []
    for i, (name, (k, s0, c)) in enumerate(curves.items()):
        fit = fit_vcurve(z, vcurve_sigma_px(z, 1.5, k, s0, c), max_sigma_px=9.0)
        assert (fit.saturation_px is None) == (c is None)
        fits.append((name, (60 * i, 0, 50, 50), fit))
    cal = build_calibration(
        fits,
        lens=IMAGE_LENS,
        sweep=SweepSource(path="/data/sweep", frames=len(z), range_mm=(0.3, 2.7)),
        estimator="oracle-test-only",
        frame_size_px=(200, 60),
    )
    summary, covered = cal.for_roi(None)
    b = cal.roi_named("B")
    assert covered == 0.0 and cal.typical.name == "B"
    assert (summary.k_px_per_mm, summary.sigma0_px, summary.saturation_px) == (
        b.k_px_per_mm,
        b.sigma0_px,
        None,
    )


def test_region_lookup_uses_overlap_then_a_summary() -> None:
    cal = _calibration()
    roi_cal, frac = cal.for_roi((20, 20, 20, 20))
    assert roi_cal.name == "A" and frac == 1.0
    summary, frac = cal.for_roi((60, 80, 10, 10))
    assert frac == 0.0 and summary.name == "all-regions"
    assert summary.z0_mm == pytest.approx(1.5, abs=0.01)
    assert summary.z0_stderr_mm >= 0.29  # half the spread of the regions' z0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "{not json", "not readable JSON"),
        (lambda d: {**d, "format": "something-else"}, "not an hdme-focus calibration"),
        (lambda d: {**d, "version": 7}, "version 7 is not supported"),
        (lambda d: {k: v for k, v in d.items() if k != "optics"}, "optics"),
        (lambda d: {**d, "rois": []}, "rois"),
        (lambda d: {**d, "rois": [{**d["rois"][0], "k_px_per_mm": -2.0}]}, "k_px_per_mm"),
    ],
)
def test_malformed_calibration_files_give_one_clear_error(
    tmp_path: Path, mutate: object, message: str
) -> None:
    good = json.loads(_calibration().model_dump_json())
    bad = mutate(good)  # type: ignore[operator]
    path = tmp_path / "cal.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(CalibrationFileError) as err:
        load_calibration(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "hdme-focus calibrate" in str(err.value)  # the fix


def test_mismatched_instrument_is_refused(tmp_path: Path) -> None:
    cal = _calibration()
    assert cal.mismatches(IMAGE_LENS, (160, 120), "oracle-test-only") == []
    f4 = ThinLens(50.0, 4.0, 5.0, 51.0, "image")
    with pytest.raises(CalibrationFileError, match=r"optics.f_number is 4 but was 8"):
        cal.check_matches(tmp_path / "c.json", f4)
    with pytest.raises(CalibrationFileError, match=r"frames are 320x240 px but were 160x120"):
        cal.check_matches(tmp_path / "c.json", IMAGE_LENS, (320, 240))
    with pytest.raises(CalibrationFileError, match=r"estimator is 'other'"):
        cal.check_matches(tmp_path / "c.json", estimator="other")


def test_slope_follows_the_thin_lens_across_positions() -> None:
    cal = _calibration()
    k = cal.slope_at_px_per_mm(np.array([0.5, 2.5]))
    v = IMAGE_LENS.sensor_distance_mm + np.array([0.5, 2.5])
    assert k[0] / k[1] == pytest.approx(v[1] / v[0], rel=1e-6)


# --------------------------------------------------------------------------- from a sweep


@pytest.fixture(scope="module")
def oracle_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, InstrumentConfig]:
    """A small simulator sweep with ground-truth blur per ROI (no trained model involved)."""
    cfg = InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))
    out = tmp_path_factory.mktemp("sweep") / "s"
    with open_instrument(cfg) as inst:
        rois = default_rois(inst)
        run_sweep(
            inst, plan_positions(0.5, 2.4, 0.1), rois, out, estimator=OracleEstimator(inst.camera)
        )  # type: ignore[arg-type]
    return out, cfg


def test_calibrating_a_simulator_sweep_finds_each_regions_focus(
    oracle_sweep: tuple[Path, InstrumentConfig],
) -> None:
    sweep_dir, cfg = oracle_sweep
    run = calibrate_sweep(sweep_dir)
    with open_instrument(cfg) as inst:
        for r in run.calibration.rois:
            assert r.roi is not None
            truth = inst.camera.focus_position_mm(r.roi)  # type: ignore[attr-defined]
            assert r.z0_mm == pytest.approx(truth, abs=0.01), r.name
            assert r.k_px_per_mm == pytest.approx(r.k_thin_lens_px_per_mm, rel=0.03), r.name
    assert run.calibration.estimator == "oracle-test-only"
    assert run.calibration.frame_size_px == (160, 120)


def test_calibration_records_the_textures_it_saw(
    oracle_sweep: tuple[Path, InstrumentConfig],
) -> None:
    """Each region's (blur, contrast) along the sweep: contrast falls as blur grows, and a
    region's own contrast at its own blur is covered while one 10x lower is not."""
    sweep_dir, _ = oracle_sweep
    cal = calibrate_sweep(sweep_dir).calibration
    for r in cal.rois:
        assert r.contrast_curve is not None and len(r.contrast_curve) >= 5, r.name
        s, c = np.asarray(r.contrast_curve).T
        assert c[np.argmin(s)] > c[np.argmax(s)], r.name  # sharp frames have more contrast
    curve = cal.rois[0].contrast_curve or []
    sigma, contrast = curve[len(curve) // 2]
    assert cal.texture_outside(sigma, contrast) is None
    weakest = min(
        float(np.interp(sigma, *np.asarray(sorted(r.contrast_curve or [])).T)) for r in cal.rois
    )
    assert cal.texture_outside(sigma, weakest / 10) is not None
    stored = Calibration.model_validate_json(cal.model_dump_json())
    assert stored.rois[0].contrast_curve == cal.rois[0].contrast_curve


def _write_config(tmp_path: Path, cfg: InstrumentConfig) -> Path:
    path = tmp_path / "instrument.toml"
    path.write_text(to_toml(cfg))
    return path


def test_cli_calibrate_writes_json_and_plot(
    tmp_path: Path, oracle_sweep: tuple[Path, InstrumentConfig]
) -> None:
    sweep_dir, _ = oracle_sweep
    out = tmp_path / "cal.json"
    result = runner.invoke(app, ["calibrate", str(sweep_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_calibration(out).estimator == "oracle-test-only"
    assert out.with_suffix(".png").stat().st_size > 1000


def test_cli_calibrate_missing_frame_is_a_clear_error(
    tmp_path: Path, oracle_sweep: tuple[Path, InstrumentConfig]
) -> None:
    sweep_dir, _ = oracle_sweep
    broken = tmp_path / "broken"
    shutil.copytree(sweep_dir, broken)
    next(iter(sorted((broken / "frames").glob("*.tif")))).unlink()
    result = runner.invoke(app, ["calibrate", str(broken), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 2
    assert "missing" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "c.json").exists()


def test_cli_calibrate_one_sided_sweep_says_what_to_record(tmp_path: Path) -> None:
    cfg = InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))
    out = tmp_path / "s"
    with open_instrument(cfg) as inst:
        rois = {"background": default_rois(inst)["background"]}  # focus at 1.0 mm
        run_sweep(
            inst, plan_positions(1.3, 2.0, 0.1), rois, out, estimator=OracleEstimator(inst.camera)
        )  # type: ignore[arg-type]
    result = runner.invoke(app, ["calibrate", str(out), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 2
    assert "no minimum inside the swept range" in result.stderr
    assert not (tmp_path / "c.json").exists()


@pytest.fixture
def frame_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The index of every frame a sweep record reads, in order."""
    reads: list[int] = []
    original = SweepRecord.read_frame

    def counting(self: SweepRecord, index: int) -> Frame:
        reads.append(index)
        return original(self, index)

    monkeypatch.setattr(SweepRecord, "read_frame", counting)
    return reads


def test_calibrating_with_an_estimator_reads_each_frame_once(
    oracle_sweep: tuple[Path, InstrumentConfig], frame_reads: list[int]
) -> None:
    """Blur and contrast curves come from one reading of each frame (the same gated
    reading autofocus makes), not a second pass over the sweep for the contrast."""
    sweep_dir, _ = oracle_sweep
    run = calibrate_sweep(sweep_dir, create_estimator("reblur", "cpu"))
    n = len(run.record)
    assert sorted(set(frame_reads)) == list(range(n))
    passes = 2 if run.coarse_sigmas else 1  # a coarse pass re-reads at another scale
    assert len(frame_reads) <= passes * n + 1, len(frame_reads)  # plus the frame-size probe
    assert all(r.contrast_curve for r in run.calibration.rois)


def _drop_contrast_columns(sweep_dir: Path, out: Path) -> Path:
    """The same sweep as recorded before sweeps had `<roi>_contrast` columns."""
    shutil.copytree(sweep_dir, out)
    manifest = json.loads((out / "sweep.json").read_text())
    manifest["columns"] = [c for c in manifest["columns"] if not c.endswith("_contrast")]
    (out / "sweep.json").write_text(json.dumps(manifest))
    with (out / "sweep.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (out / "sweep.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=manifest["columns"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_reusing_the_recorded_blur_reads_no_frame_for_the_contrast_curves(
    oracle_sweep: tuple[Path, InstrumentConfig],
    frame_reads: list[int],
    tmp_path: Path,
) -> None:
    """The sweep records each region's contrast beside its blur (the same reading), so a
    calibration that reuses the recorded blur has its contrast curves without reading
    the frames a second time; a sweep recorded before it had the column still gets
    them, by reading its frames."""
    sweep_dir, _ = oracle_sweep
    run = calibrate_sweep(sweep_dir)
    assert run.reused_sigmas, "the recorded blur is reused"
    assert len(frame_reads) <= 1, len(frame_reads)  # at most the frame-size probe
    curves = {r.name: r.contrast_curve for r in run.calibration.rois}
    assert all(curves.values())
    frame_reads.clear()
    old = calibrate_sweep(_drop_contrast_columns(sweep_dir, tmp_path / "old"))
    assert len(frame_reads) >= len(old.record)
    for r in old.calibration.rois:
        np.testing.assert_allclose(r.contrast_curve or [], curves[r.name] or [], rtol=1e-5)
