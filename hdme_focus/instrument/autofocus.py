"""Autofocus a region from a single capture (HDME): the decisions.

HDME (`method="hdme"`): capture one frame, estimate the region's blur sigma,
turn it into the unsigned distance |z - z0| = sqrt(max(s^2 - sigma0^2, 0)) / k
with the calibration (s: the blur behind the reading, expanded where the
calibration found the reading compressing far out), choose the direction, and
make one move. One frame cannot
tell which side of focus the stage is on, so the direction comes from a
strategy:

- `prior`: of the two candidates z +- d, take the one nearer to a prior focus
  position (see prior.py). It is trusted ("unambiguous") when the candidates differ
  in distance to the prior by more than twice the prior's uncertainty, i.e.
  when both d and |z - prior| exceed that uncertainty; when they do not,
  `prior` still takes the nearer one and reports the move as ambiguous.
- `probe`: one known step and a second capture; the focus is the position
  consistent with both blur readings. Two captures, two moves.
- `auto`: `prior` when unambiguous, otherwise `probe`.
- `chroma`: the side from the frame's colour (axial chromatic aberration, see
  chroma_direction.py), one capture; when the cue abstains, `auto`.

`max_tries` > 1 checks and corrects the landing: a verify capture, and when
that reading is too near focus to place it (the V-curve is flat there), one
capture a few DOF away on the slope, then a move to the position consistent
with every reading so far. Each extra try costs up to two captures and two moves.

A candidate outside the soft limits is never chosen, which settles the
direction on its own. The procedure never moves on a NaN, pixel-saturated,
out-of-range or low-confidence estimate: it raises AutofocusRefused and the
stage stays where it was.

The classical Brent and sweep searches live in search.py, the focus prior in
prior.py, the distance error of a blur reading in calibration/model.py.

Device time is read from the instrument clock around captures and moves only;
compute time (estimation, statistics, decisions) is wall time, kept separate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hdme_focus.calibration.model import (
    GLOBAL_REGION,
    Calibration,
    CoarseFit,
    RoiCalibration,
)
from hdme_focus.core.frame import Frame, to_gray_float
from hdme_focus.core.roi import Roi
from hdme_focus.estimation.base import DefocusEstimator, RoiSigma, roi_reading
from hdme_focus.estimation.noise import frame_noise
from hdme_focus.instrument.devices import Instrument
from hdme_focus.instrument.prior import Prior, choose_prior, load_state, save_focus
from hdme_focus.instrument.session import AutofocusRefused, AutofocusResult, Session

if TYPE_CHECKING:  # the chroma cue (OpenCV) loads only when the chroma direction is used
    from hdme_focus.instrument.chroma_direction import ChromaConvention

Strategy = Literal["auto", "prior", "probe", "chroma"]
STRATEGIES: tuple[str, ...] = ("auto", "prior", "probe", "chroma")

RANGE_FRACTION = 0.8  # above this share of the estimator's range, re-estimate downscaled
COARSE_SWITCH = 0.95  # ... or above this share of the fine curve's calibrated blur range
TOLERANCE_DOF = 0.5  # "in focus": within +- half the depth of focus
PROBE_MIN_DOF = 2.5  # probe step limits, in depths of focus (see _probe)
PROBE_MAX_DOF = 3.0


@dataclass(frozen=True)
class Measurement:
    """One capture's blur reading of the region."""

    position_mm: float
    sigma_px: float
    spread_px: float
    confidence: float
    textured_fraction: float
    saturated_fraction: float
    distance_mm: float  # |z - z0| from the calibration
    downscale: float = 1.0


# --------------------------------------------------------------------------- estimation


def _crop_box(roi: Roi, width: int, height: int, margin: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, roi.x - margin), max(0, roi.y - margin)
    x1, y1 = min(width, roi.x + roi.w + margin), min(height, roi.y + roi.h + margin)
    return x0, y0, x1, y1


def estimate_roi(
    frame: Frame,
    roi: Roi,
    estimator: DefocusEstimator,
    margin_px: int | None = None,
    downscale: float = 1.0,
) -> RoiSigma:
    """Robust blur of a region; the estimator sees the whole frame, or the ROI plus a margin.

    The whole frame (default) is exactly what a sweep's estimates, hence the
    calibration, were made on; estimators that standardise their input per
    frame read a crop slightly differently. A margin (e.g. 32 px) is faster on
    large frames. `downscale` > 1 estimates on the frame shrunk by that factor
    (sigma scaled back): a coarse reading for blur beyond the trained range.
    """
    height, width = frame.image.shape[:2]
    if margin_px is None:
        x0, y0, x1, y1 = 0, 0, width, height
    else:
        x0, y0, x1, y1 = _crop_box(roi, width, height, margin_px)
    crop = frame.image[y0:y1, x0:x1]
    gray = to_gray_float(crop, frame.bit_depth)
    inner = (roi.x - x0, roi.y - y0, roi.w, roi.h)
    estimate = estimator.estimate(gray, downscale=downscale)  # gray already: no 2nd conversion
    # texture is judged against the whole frame's noise, as the sweep behind the calibration
    # judged it: in a small crop of a sharp region its own fine texture would read as noise
    whole = gray if margin_px is None else to_gray_float(frame.image, frame.bit_depth)
    return roi_reading(estimate, gray, inner, frame_noise(whole))


def _wants_coarse(sigma_px: float, roi_cal: RoiCalibration, estimator: DefocusEstimator) -> bool:
    """A fine reading at the top of its calibrated range (or of the estimator's) is unreliable."""
    if roi_cal.coarse is None or not math.isfinite(sigma_px):
        return False
    top = roi_cal.sigma_range_px[1] if roi_cal.sigma_range_px else math.inf
    top = min(top, RANGE_FRACTION * estimator.sigma_max_px)
    return sigma_px > COARSE_SWITCH * top


@dataclass(frozen=True)
class Thresholds:
    """When an estimate is too weak to move on."""

    min_confidence: float = 0.2
    max_saturated_fraction: float = 0.2
    max_range_fraction: float = 0.95  # of the estimator's sigma range (times the downscale)


def _check_estimate(
    stats: RoiSigma, downscale: float, estimator: DefocusEstimator, limits: Thresholds
) -> str | None:
    """Why this estimate must not be moved on, or None."""
    if stats.saturated_fraction > limits.max_saturated_fraction:
        return (
            f"{stats.saturated_fraction:.0%} of the ROI is saturated; reduce camera.exposure_ms "
            "or gain, or choose another ROI"
        )
    if not math.isfinite(stats.sigma_px) and stats.mean_confidence is not None:
        return (
            f"the estimator cannot read blur in the ROI: its own confidence is too low "
            f"(mean {stats.mean_confidence:.2f}, {stats.textured_fraction:.0%} of pixels "
            "usable); the region has too little structure, choose a textured region"
        )
    if not math.isfinite(stats.sigma_px):
        return (
            f"the ROI has too little texture to measure blur ({stats.textured_fraction:.0%} "
            "textured pixels); choose a textured region"
        )
    if stats.confidence < limits.min_confidence:
        return (
            f"low-confidence estimate (confidence {stats.confidence:.2f} < "
            f"{limits.min_confidence:.2f}, sigma {stats.sigma_px:.2f} +- "
            f"{stats.spread_px:.2f} px); "
            "choose a textured region on one depth plane"
        )
    sigma_max = estimator.sigma_max_px
    if stats.sigma_px > limits.max_range_fraction * sigma_max * downscale:
        return (
            f"blur {stats.sigma_px:.1f} px is at the limit of the estimator's range "
            f"({sigma_max * downscale:.1f} px); start nearer to focus or search (sweep method)"
        )
    return None


# --------------------------------------------------------------------------- decisions


Reading = tuple[float, float, float]  # (position referred to the fine curve, distance, error)


def consistent_focus(readings: Sequence[Reading]) -> tuple[float, float]:
    """Focus position most consistent with (position, distance, distance error) readings.

    Each reading allows two positions z +- d; the one minimising the misfit
    sum(((|z_i - c| - d_i) / err_i)^2) picks the side. The position is then the
    inverse-variance mean of each reading's candidate on that side: readings far
    from focus are precise in distance, readings next to it are not. Returns
    (position, misfit of the runner-up minus the best).
    """

    def cost(c: float) -> float:
        return sum(((abs(z - c) - d) / err) ** 2 for z, d, err in readings)

    cands = sorted({z + sgn * d for z, d, _ in readings for sgn in (-1.0, 1.0)}, key=cost)
    best = cands[0]
    margin = cost(cands[1]) - cost(best) if len(cands) > 1 else math.inf
    num = den = 0.0
    for z, d, err in readings:
        c = min((z - d, z + d), key=lambda v: abs(v - best))
        num += c / err**2
        den += 1.0 / err**2
    return num / den, margin


def _candidates_in_limits(
    z: float, d: float, lo: float, hi: float
) -> tuple[list[float], list[float]]:
    both = [z - d, z + d]
    inside = [c for c in both if lo - 1e-9 <= c <= hi + 1e-9]
    return both, inside


# --------------------------------------------------------------------------- hdme


@dataclass
class HdmeOptions:
    strategy: Strategy = "auto"
    verify: bool = False
    max_tries: int = 1
    prior_uncertainty_mm: float | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    tolerance_dof: float = TOLERANCE_DOF
    state_file: Path | None = None  # None: neither read nor write the last focus
    margin_px: int | None = None  # estimator context: None = whole frame, else ROI + margin
    save_state: bool = True  # False: read the last focus from state_file but do not write it
    global_calibration: bool = False  # read with the all-regions V-curve (another sample)
    chroma: ChromaConvention | None = None  # strategy "chroma": the sweep's sign convention


def calibration_for(
    calibration: Calibration, roi: Roi, use_global: bool, result: AutofocusResult
) -> RoiCalibration:
    """The V-curve to read this region's blur with; the JSON and the line say which.

    The region's own fit when the calibration covers it; the global one (the
    typical region's curve, the median z0, see `Calibration.for_roi`) for a region
    it never saw, or for every region when `use_global` (another sample).
    """
    roi_cal, covered = calibration.for_roi(None if use_global else roi.as_tuple())
    result.calibration_region = roi_cal.name
    refused_region = None if use_global else calibration.rejected_covering(roi.as_tuple())
    if refused_region is not None:
        # said on the line and in the JSON: the V-curve used is not this region's own
        result.calibration_note = (
            f"calibrate refused region {refused_region.name!r} ({refused_region.reason}); "
            f"focusing with the {roi_cal.name!r} calibration instead, recalibrate for this region"
        )
    elif covered == 0.0:
        result.calibration_note = (
            f"{'asked for the global calibration' if use_global else 'region not calibrated'}: "
            f"read with the global calibration over {len(calibration.rois)} region(s) (k "
            f"{roi_cal.k_px_per_mm:.2f} px/mm, sigma0 {roi_cal.sigma0_px:.2f} px); calibrate "
            "this region when the refinement falls back or refuses"
        )
    return roi_cal


def autofocus_hdme(
    instrument: Instrument,
    roi: Roi,
    estimator: DefocusEstimator,
    calibration: Calibration,
    options: HdmeOptions | None = None,
) -> AutofocusResult:
    """Focus `roi` from one capture (two with the probe), one move; see the module notes."""
    opts = options or HdmeOptions()
    if opts.strategy not in STRATEGIES:
        raise ValueError(f"strategy {opts.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if opts.max_tries < 1:
        raise ValueError(f"max_tries {opts.max_tries}: must be at least 1")
    u = opts.prior_uncertainty_mm
    if u is not None and not (math.isfinite(u) and u > 0):
        raise ValueError(f"prior uncertainty {u} mm: must be a positive distance")
    safe = instrument.stage
    result = AutofocusResult(
        method="hdme", roi=roi.spec, start_mm=safe.position_mm(), strategy=opts.strategy
    )
    run = Session(instrument, result)
    roi_cal = calibration_for(calibration, roi, opts.global_calibration, result)
    k = roi_cal.k_px_per_mm
    dof = 1.0 / k
    result.dof_mm = dof
    tol_mm = opts.tolerance_dof * dof
    # in focus: blur no larger than at the tolerance, plus the estimator's scatter seen in
    # the calibration (near focus a 0.1 px error is a large distance error: d ~ sqrt(sigma))
    sigma_tol_px = roi_cal.sigma_px(roi_cal.z0_mm + tol_mm) + roi_cal.rmse_px
    lo, hi = safe.min_mm, safe.max_mm
    readings: list[Reading] = []
    frames: list[Frame] = []

    def measure() -> Measurement:
        frame = run.capture()
        frames.append(frame)
        with run.compute():
            if not result.measurements:
                h, w = frame.image.shape[:2]
                roi.check_inside(w, h)
            coarse = roi_cal.coarse
            stats, scale = estimate_roi(frame, roi, estimator, opts.margin_px), 1.0
            if coarse is not None and _wants_coarse(stats.sigma_px, roi_cal, estimator):
                scale = coarse.downscale
                stats = estimate_roi(frame, roi, estimator, opts.margin_px, scale)
            why = _check_estimate(stats, scale, estimator, opts.thresholds)
            if why is None and roi_cal.name == GLOBAL_REGION:
                why = calibration.texture_outside(stats.sigma_px, stats.contrast)
            pos = safe.position_mm()
            # the coarse curve's vertex may sit slightly off the fine one: report focus
            # relative to the fine z0, the more precise of the two
            curve: RoiCalibration | CoarseFit = roi_cal
            shift = 0.0
            if scale > 1.0 and coarse is not None:
                curve, shift = coarse, roi_cal.z0_mm - coarse.z0_mm
            d = (
                float(curve.distance_mm(stats.sigma_px))
                if math.isfinite(stats.sigma_px)
                else math.nan
            )
            valid = curve.sigma_range_px
            if valid is not None and stats.sigma_px > 1.05 * valid[1]:
                result.beyond_range = True  # extrapolated: usually an underestimate
            if why is None and math.isinf(d):
                why = (
                    f"blur {stats.sigma_px:.1f} px is at or beyond the saturation of the "
                    f"calibrated reading ({curve.saturation_px:.1f} px): any distance farther "
                    "out would read the same; start nearer to focus or search (sweep method)"
                )
            m = Measurement(
                pos,
                stats.sigma_px,
                stats.spread_px,
                stats.confidence,
                stats.textured_fraction,
                stats.saturated_fraction,
                d,
                scale,
            )
            result.measurements.append({k_: float(v) for k_, v in dataclasses.asdict(m).items()})
        if why is not None:
            result.refused = why
            result.final_mm = safe.position_mm()
            raise AutofocusRefused(f"autofocus refused to move: {why}", result)
        err = curve.distance_error_mm(m.sigma_px)
        readings.append((m.position_mm + shift, m.distance_mm, err))
        return m

    first = measure()
    result.measured_sigma_px = first.sigma_px
    z, d, d_err = readings[0]  # position referred to the fine curve (see measure)
    state = load_state(opts.state_file)
    prior = choose_prior(roi, roi_cal, state, opts.prior_uncertainty_mm)
    result.prior = dataclasses.asdict(prior)

    with run.compute():
        # stay only when surely in focus: next to focus the reading is least precise
        if d + d_err <= tol_mm:
            target, how = first.position_mm, "in-focus"
        elif opts.strategy == "chroma":
            target, how = _decide_chroma(frames[0], roi, z, d, lo, hi, prior, opts.chroma, result)
        else:
            target, how = _decide_first(z, d, lo, hi, prior, opts.strategy, result)
    if how == "probe":
        target = _probe(run, measure, z, d, dof, lo, hi, prior, safe.max_step_mm, readings)
    result.direction = how
    result.target_mm = target
    result.predicted_sigma_px = roi_cal.sigma_px(roi_cal.z0_mm)
    run.move(target)
    result.tries = 1

    while opts.verify or opts.max_tries > 1:
        check = measure()
        result.verified_sigma_px = check.sigma_px
        result.residual_mm = check.distance_mm
        result.in_focus = check.sigma_px <= sigma_tol_px
        if result.tries >= opts.max_tries:
            break
        flat = readings[-1][2] > tol_mm  # next to focus the V is too flat to place it
        if result.in_focus and not flat:
            break
        if flat:
            _slope_read(run, measure, check.position_mm, readings, dof, lo, hi, safe.max_step_mm)
        with run.compute():
            target, _ = consistent_focus(readings)
            target = min(max(target, lo), hi)
        result.target_mm = target
        run.move(target)
        result.tries += 1
    result.final_mm = safe.position_mm()
    if result.in_focus is not False and opts.save_state:
        save_focus(opts.state_file, roi, result.final_mm)
    return result


def _decide_first(
    z: float, d: float, lo: float, hi: float, prior: Prior, strategy: str, result: AutofocusResult
) -> tuple[float, str]:
    """Target and how it was decided ("limits", "prior" or "probe" to be done)."""
    both, inside = _candidates_in_limits(z, d, lo, hi)
    if not inside:
        result.refused = (
            f"both focus candidates {both[0]:.4f} and {both[1]:.4f} mm lie outside the soft "
            f"limits [{lo:.4f}, {hi:.4f}] mm; widen stage.min_mm/max_mm or check the calibration"
        )
        result.final_mm = z
        raise AutofocusRefused(f"autofocus refused to move: {result.refused}", result)
    if len(inside) == 1:
        return inside[0], "limits"
    gap = abs(abs(both[0] - prior.position_mm) - abs(both[1] - prior.position_mm))
    unambiguous = gap > 2.0 * prior.uncertainty_mm
    nearer = min(both, key=lambda c: abs(c - prior.position_mm))
    if strategy == "probe" or (strategy == "auto" and not unambiguous):
        return nearer, "probe"
    result.ambiguous = not unambiguous
    return nearer, "prior"


def _decide_chroma(
    frame: Frame,
    roi: Roi,
    z: float,
    d: float,
    lo: float,
    hi: float,
    prior: Prior,
    convention: ChromaConvention | None,
    result: AutofocusResult,
) -> tuple[float, str]:
    """The side the frame's colour shows; when the cue abstains, `auto` decides.

    A side whose candidate lies outside the soft limits is not taken either:
    the limits settle it as for every strategy.
    """
    from hdme_focus.estimation.chroma import chroma_cue

    cue = chroma_cue(frame.image, roi.as_tuple())
    side = convention.side(cue) if convention is not None else 0
    abstained = cue.reason
    if convention is None or convention.red_sharper_above is None:
        abstained = (convention.reason if convention else None) or "no sign convention"
    result.chroma = {
        "relative_blur_px": cue.relative_blur_px,
        "residual": cue.residual,
        "contrast": cue.contrast,
        "side": side,
        "abstained": abstained,
    }
    if side != 0 and lo - 1e-9 <= z + side * d <= hi + 1e-9:
        return z + side * d, "chroma"
    return _decide_first(z, d, lo, hi, prior, "auto", result)


def _probe(
    run: Session,
    measure: Callable[[], Measurement],
    z: float,
    d: float,
    dof: float,
    lo: float,
    hi: float,
    prior: Prior,
    max_step_mm: float,
    readings: list[Reading],
) -> float:
    """One known step towards the prior's side, a second capture, the consistent focus.

    The step is at least PROBE_MIN_DOF depths of focus: next to focus the V-curve is
    flat, so a short step would put the second reading where blur says least about
    distance; a few DOF out, the reading is on the slope and fixes the focus.
    """
    with run.compute():
        step = min(max(0.5 * d, PROBE_MIN_DOF * dof), PROBE_MAX_DOF * dof, max_step_mm)
        toward = min((z - d, z + d), key=lambda c: abs(c - prior.position_mm))
    _step_and_read(run, measure, z, step if toward >= z else -step, lo, hi)
    with run.compute():
        target, _ = consistent_focus(readings)
    return min(max(target, lo), hi)


def _slope_read(
    run: Session,
    measure: Callable[[], Measurement],
    z: float,
    readings: list[Reading],
    dof: float,
    lo: float,
    hi: float,
    max_step_mm: float,
) -> None:
    """One capture PROBE_MIN_DOF depths of focus away, on the slope of the V.

    A reading within a DOF or two of focus cannot tell 0.5 px of blur from 1.5 px, so
    it cannot confirm or correct the landing. The step goes away from the current
    focus estimate; when the landing is that estimate, either way lands at least
    PROBE_MIN_DOF minus the landing error from focus, where blur changes with distance.
    """
    with run.compute():
        here = readings[-1][0]  # this position, referred to the fine curve
        best, _ = consistent_focus(readings)
        step = min(PROBE_MIN_DOF * dof, max_step_mm)
    _step_and_read(run, measure, z, step if here >= best else -step, lo, hi)


def _step_and_read(
    run: Session,
    measure: Callable[[], Measurement],
    z: float,
    step_mm: float,
    lo: float,
    hi: float,
) -> None:
    """Move by step_mm (the other way if that leaves the soft limits), then capture."""
    if not lo <= z + step_mm <= hi:
        step_mm = -step_mm
    run.move(min(max(z + step_mm, lo), hi))
    measure()
