"""Calibrate from a recorded sweep: per-ROI blur -> V-curve fits -> calibration file + plot.

The glue between the sweep record (instrument layer) and the pure fits
(calibration layer). Blur comes from the sweep's `<roi>_sigma_px` columns when
it was recorded with an estimator, else it is estimated now from the frames.
Regions whose fit is unusable are left out with the reason; when none is
usable nothing is saved and the error says what to record instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hdme_focus.calibration.fit import (
    CalibrationError,
    FitAssessment,
    VCurveFit,
    assess_fit,
    fit_problems,
    fit_vcurve,
)
from hdme_focus.calibration.model import (
    Calibration,
    CoarseFit,
    RejectedRoi,
    SweepSource,
    build_calibration,
)
from hdme_focus.core.atomic import write_figure_atomic
from hdme_focus.core.frame import Frame, to_gray_float
from hdme_focus.estimation.base import (
    DefocusEstimate,
    DefocusEstimator,
    roi_reading,
    roi_sigma,
)
from hdme_focus.estimation.noise import frame_noise
from hdme_focus.instrument.sweep import CONTRAST_QUANTITY, SIGMA_QUANTITY
from hdme_focus.records import SweepRecord, load_sweep, roi_column

SIGMA, CONTRAST = SIGMA_QUANTITY, CONTRAST_QUANTITY  # the sweep's per-ROI columns
SATURATION_FRACTION = 0.9  # ignore blur above this share of the estimator's range
# Fit the coarse (downscaled) curve once the sweep's readings pass this share of the
# range: autofocus reads far starts through it from 0.8 x 0.95 of the range on
# (autofocus.RANGE_FRACTION x COARSE_SWITCH), and a model whose output compresses
# near its top (hdme-lite tops out near 8 of 10 px) never reaches the 0.9 ceiling.
COARSE_NEEDED_FRACTION = 0.7
COARSE_DOWNSCALE = 2.0  # second calibration on half-resolution frames, for large blur
COARSE_Z0_AGREE_DOF = 1.0  # its focus within this many (fine) DOF of the fine curve's


@dataclass
class CalibrationRun:
    """The saved calibration, every region's fit, and the regions left out (with why)."""

    calibration: Calibration
    record: SweepRecord
    sigmas: dict[str, NDArray[np.float64]]
    fits: dict[str, VCurveFit]
    rejected: dict[str, str] = field(default_factory=dict)
    coarse: dict[str, VCurveFit] = field(default_factory=dict)
    coarse_sigmas: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    assessments: dict[str, FitAssessment] = field(default_factory=dict)
    reused_sigmas: bool = False  # the sweep's recorded sigma_px columns were used


def sweep_sigmas(
    record: SweepRecord,
    estimator: DefocusEstimator | None,
    progress: Callable[[int, int], None] | None = None,
    prefer_recorded: bool = False,
) -> tuple[dict[str, NDArray[np.float64]], str]:
    """Per-ROI blur along the sweep and the estimator that produced it.

    The recorded `<roi>_sigma_px` columns are used when no estimator is given or
    when they came from the same estimator (re-estimating costs a minute on a
    long sweep); another estimator's blur is on another scale, so then it
    estimates again, unless `prefer_recorded` (the user named no estimator).
    """
    sigmas, _, name = sweep_readings(record, estimator, progress, prefer_recorded)
    return sigmas, name


Curves = dict[str, NDArray[np.float64]]


def sweep_readings(
    record: SweepRecord,
    estimator: DefocusEstimator | None,
    progress: Callable[[int, int], None] | None = None,
    prefer_recorded: bool = False,
) -> tuple[Curves, Curves | None, str]:
    """`sweep_sigmas`, plus each region's local contrast from the same reading: read now
    when the frames are estimated, the recorded columns when the recorded blur is reused
    (None for a sweep recorded before it had them: nothing was read)."""
    if reuses_recorded(record, estimator, prefer_recorded):
        name = recorded_estimator(record)
        sigmas = {n: record.roi_values(n, SIGMA) for n in record.rois}
        if all(CONTRAST in record.quantities(n) for n in record.rois):
            return sigmas, {n: record.roi_values(n, CONTRAST) for n in record.rois}, name
        return sigmas, None, name
    if estimator is None:
        raise CalibrationError(
            f"{record.directory}: the sweep has no {SIGMA} columns; record the "
            "sweep with an estimator or give calibrate one to estimate the frames"
        )
    sigmas, contrasts = _roi_readings(
        record, lambda f: estimator.estimate(f.image, f.bit_depth), progress
    )
    return sigmas, contrasts, estimator.name


def recorded_estimator(record: SweepRecord) -> str:
    """The estimator whose blur the sweep's sigma_px columns hold."""
    return str(record.manifest.get("metadata", {}).get("estimator", "unknown"))


def reuses_recorded(
    record: SweepRecord, estimator: DefocusEstimator | None, prefer_recorded: bool = False
) -> bool:
    """Whether the sweep's own blur columns are used instead of estimating the frames."""
    if not all(record.has(roi_column(n, SIGMA)) for n in record.rois):
        return False
    return estimator is None or prefer_recorded or estimator.name == recorded_estimator(record)


def _roi_readings(
    record: SweepRecord,
    estimate: Callable[[Frame], DefocusEstimate],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Curves, Curves]:
    """Per-ROI robust blur and local contrast of every frame of a sweep, read as autofocus
    reads a region (`roi_reading`: a learned confidence gates the pixels), in one pass."""
    rois = record.rois
    sigmas = {n: np.full(len(record), np.nan) for n in rois}
    contrasts = {n: np.full(len(record), np.nan) for n in rois}
    for i in range(len(record)):
        frame = record.read_frame(i)
        est = estimate(frame)
        gray = to_gray_float(frame.image, frame.bit_depth)
        noise = frame_noise(gray)
        for n, roi in rois.items():
            reading = roi_reading(est, gray, roi.as_tuple(), noise)
            sigmas[n][i], contrasts[n][i] = reading.sigma_px, reading.contrast
        if progress is not None:
            progress(i + 1, len(record))
    return sigmas, contrasts


def sweep_contrasts(record: SweepRecord) -> dict[str, NDArray[np.float64]]:
    """Per-ROI median local contrast of every frame (`RoiSigma.contrast`; no estimator):
    for a calibration that reuses the sweep's recorded blur, and so has read no frame."""
    out = {n: np.full(len(record), np.nan) for n in record.rois}
    for i in range(len(record)):
        frame = record.read_frame(i)
        gray = to_gray_float(frame.image, frame.bit_depth)
        blank = np.zeros(gray.shape, dtype=np.float32)
        noise = frame_noise(gray)
        for n, roi in record.rois.items():
            out[n][i] = roi_sigma(blank, gray, roi.as_tuple(), noise=noise).contrast
    return out


def _with_contrast_curves(
    calibration: Calibration,
    sigmas: Mapping[str, NDArray[np.float64]],
    contrasts: Mapping[str, NDArray[np.float64]],
) -> Calibration:
    """Each region's (blur, contrast) along its sweep: what `texture_outside` compares with."""
    rois = []
    for r in calibration.rois:
        pairs = [
            (round(float(s), 4), float(f"{c:.4g}"))
            for s, c in zip(sigmas.get(r.name, ()), contrasts.get(r.name, ()), strict=True)
            if math.isfinite(s) and math.isfinite(c) and c > 0
        ]
        rois.append(r.model_copy(update={"contrast_curve": pairs or None}))
    return calibration.model_copy(update={"rois": rois})


def coarse_sigmas(
    record: SweepRecord,
    estimator: DefocusEstimator,
    downscale: float = COARSE_DOWNSCALE,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Per-ROI blur estimated on downscaled frames (every estimator takes `downscale`)."""
    return _roi_readings(
        record, lambda f: estimator.estimate(f.image, f.bit_depth, downscale=downscale), progress
    )[0]


def needs_coarse_pass(sigmas: Mapping[str, NDArray[np.float64]], sigma_max_px: float) -> bool:
    """Whether any region's readings came near the top of the estimator's range."""
    top = COARSE_NEEDED_FRACTION * float(sigma_max_px)
    return any(bool(np.any(v[np.isfinite(v)] >= top)) for v in sigmas.values())


def _fit_coarse(
    positions: NDArray[np.float64],
    sigmas: dict[str, NDArray[np.float64]],
    sigma_max: float,
    downscale: float,
    fine: Mapping[str, VCurveFit],
) -> dict[str, VCurveFit]:
    """Coarse V-curves that pass the same quality checks and put focus where the fine
    curve does (within COARSE_Z0_AGREE_DOF of its DOF); the others are simply absent.

    The region's focus does not move with the frame's scale. A coarse curve whose
    vertex lies elsewhere fits something else (the estimator failing at that scale,
    another depth in the region): hdme-lite-conf's letters/M read 12-14 px in focus
    at half size, and its coarse curve put focus 2.8 DOF away, where far starts
    were sent.
    """
    fits: dict[str, VCurveFit] = {}
    for name, values in sigmas.items():
        try:
            fit = fit_vcurve(
                positions, values, max_sigma_px=SATURATION_FRACTION * sigma_max * downscale
            )
        except CalibrationError:
            continue
        ref = fine.get(name)
        agrees = ref is None or abs(fit.z0_mm - ref.z0_mm) <= COARSE_Z0_AGREE_DOF * ref.dof_mm
        if not fit_problems(fit) and agrees:
            fits[name] = fit
    return fits


def _frame_size(record: SweepRecord) -> tuple[int, int] | None:
    if len(record) == 0:
        return None
    shape = record.read_frame(0).image.shape
    return int(shape[1]), int(shape[0])


def calibrate_sweep(
    sweep_dir: Path | str,
    estimator: DefocusEstimator | None = None,
    progress: Callable[[int, int], None] | None = None,
    prefer_recorded: bool = False,
    **limits: float,
) -> CalibrationRun:
    """Fit every ROI of a sweep; CalibrationError when no region gives a usable fit.

    Each fit is also checked against the configured optics (thin-lens slope), its
    own residuals (bootstrap over frames for the z0 uncertainty) and the stage's
    soft limits (`assess_fit`); a region failing those is refused like a poor fit.
    """
    record = load_sweep(sweep_dir)
    reused = reuses_recorded(record, estimator, prefer_recorded)
    sigmas, contrasts, est_name = sweep_readings(record, estimator, progress, prefer_recorded)
    # the estimator's range limits the blur it can report: drop readings at its ceiling
    same = estimator is not None and estimator.name == est_name
    sigma_max = estimator.sigma_max_px if same and estimator is not None else None
    max_sigma = SATURATION_FRACTION * float(sigma_max) if sigma_max else None
    config = record.config()
    lens = config.optics.lens()
    soft_limits = (config.stage.min_mm, config.stage.max_mm)
    positions = record.positions_mm
    fits: dict[str, VCurveFit] = {}
    rejected: dict[str, str] = {}
    assessments: dict[str, FitAssessment] = {}
    for name, values in sigmas.items():
        try:
            fit = fit_vcurve(positions, values, max_sigma_px=max_sigma)
        except CalibrationError as exc:
            rejected[name] = str(exc)
            continue
        fits[name] = fit
        problems = fit_problems(fit, **limits)  # type: ignore[arg-type]
        if not problems:
            assessments[name] = assess_fit(
                fit, positions, values, lens, soft_limits, max_sigma_px=max_sigma
            )
            problems = assessments[name].problems
        if problems:
            rejected[name] = "; ".join(problems)
    good = [(n, record.rois[n].as_tuple(), f) for n, f in fits.items() if n not in rejected]
    if not good:
        detail = " | ".join(f"{n}: {why}" for n, why in rejected.items())
        raise CalibrationError(f"{record.directory}: no region gave a usable fit; {detail}")
    source = SweepSource(
        path=str(Path(record.directory).resolve()),
        frames=len(record),
        status=record.status,
        range_mm=(float(np.min(positions)), float(np.max(positions))),
        created=record.manifest.get("created"),
    )
    coarse: dict[str, VCurveFit] = {}
    wanted: dict[str, NDArray[np.float64]] = {}
    if same and sigma_max and estimator is not None and needs_coarse_pass(sigmas, sigma_max):
        # the coarse pass re-estimates every frame; it only adds range where the fine one
        # came near the estimator's ceiling
        by_scale = coarse_sigmas(record, estimator, progress=progress)
        good_names = {n for n, _, _ in good}
        wanted = {n: v for n, v in by_scale.items() if n in good_names}
        coarse = _fit_coarse(positions, wanted, float(sigma_max), COARSE_DOWNSCALE, fits)
    calibration = build_calibration(
        good,
        lens=lens,
        sweep=source,
        estimator=est_name,
        frame_size_px=_frame_size(record),
        coarse={n: CoarseFit.from_fit(f, COARSE_DOWNSCALE) for n, f in coarse.items()},
        assessments=assessments,
        rejected=[
            RejectedRoi(
                name=n, roi=record.rois[n].as_tuple() if n in record.rois else None, reason=r
            )
            for n, r in rejected.items()
        ],
    )
    if contrasts is None:  # an older sweep's blur was reused: read its frames for contrast
        contrasts = sweep_contrasts(record)
    calibration = _with_contrast_curves(calibration, sigmas, contrasts)
    return CalibrationRun(
        calibration, record, sigmas, fits, rejected, coarse, wanted, assessments, reused
    )


def plot_calibration(run: CalibrationRun, path: Path | str) -> Path:
    """Blur against position per ROI with the fitted V-curves; outliers marked."""
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(7.5, 4.5), dpi=110)
    ax = fig.subplots()
    z = run.record.positions_mm
    zz = np.linspace(float(np.min(z)), float(np.max(z)), 400)
    for i, (name, sig) in enumerate(run.sigmas.items()):
        colour = f"C{i % 10}"
        fit = run.fits.get(name)
        used = fit.inliers if fit is not None else np.zeros(len(sig), bool)
        ax.plot(z[used], sig[used], "o", ms=3.5, color=colour)
        ax.plot(z[~used], sig[~used], "x", ms=5, color=colour, alpha=0.6)
        if fit is not None:
            label = (
                f"{name}: z0 {fit.z0_mm:.3f} mm, k {fit.k_px_per_mm:.2f} px/mm, "
                f"sigma0 {fit.sigma0_px:.2f} px, R^2 {fit.r2:.3f}"
            )
            if name in run.rejected:
                label += " (rejected)"
            ax.plot(
                zz,
                fit.sigma_px(zz),
                "-" if name not in run.rejected else ":",
                color=colour,
                label=label,
            )
            if math.isfinite(fit.z0_mm):
                ax.axvline(fit.z0_mm, color=colour, lw=0.6, alpha=0.5)
        else:
            ax.plot([], [], "x", color=colour, label=f"{name}: no fit")
        if name in run.coarse_sigmas:
            ax.plot(z, run.coarse_sigmas[name], "+", ms=4, color=colour, alpha=0.5)
        if name in run.coarse:
            ax.plot(zz, run.coarse[name].sigma_px(zz), "--", lw=0.8, color=colour, alpha=0.7)
    finite = np.concatenate([v[np.isfinite(v)] for v in run.sigmas.values()] or [np.zeros(1)])
    ax.set_ylim(0.0, 1.25 * float(finite.max()) if finite.size else 1.0)
    ax.set_xlabel("stage position (mm)")
    ax.set_ylabel("estimated blur sigma (px)")
    ax.set_title(
        f"V-curve calibration ({run.calibration.estimator}); x rejected, "
        f"+ and dashed: frames downscaled x{COARSE_DOWNSCALE:g}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper center")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return write_figure_atomic(path, fig)
