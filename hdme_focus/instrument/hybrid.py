"""Hybrid autofocus: the HDME single-capture jump, then a focus-measure refinement.

The jump reads the blur once and moves to where the calibration puts focus; it
misses by a DOF or two when the region's texture reads its blur a little high
or low (the slope k of the V-curve depends on the texture) or when the
landing is on the flat bottom of the V. A focus measure (Tenengrad) peaks at
best focus whatever the texture, so after the jump the hybrid reads it at the
landing and a known step beyond, and moves to the peak of a model fitted to
every reading. Near focus the log measure follows

    log FM(z) = A - c * log(1 + ((z - z0) / w)^2)

(gradient energy of a 1/f^2 texture under Gaussian blur falls as 1/(sigma^2 +
floor^2)); the width w is fixed at `width_dof` depths of focus, so three
readings fix A, c and z0. The start frame's measure is one of them, for free;
further readings are taken where the fit puts the peak until the peak lies
within one step of a reading.

The readings disagree (and the hybrid falls back to a bounded Brent search
within the soft limits, or refuses, as `fallback` says) when no peak is
found within the reads allowed or the peak lies farther from the jump's
landing than the blur reading's own error allows. A fitted peak counts only
when it stands above the noise (the model drops by `min_peak_drop_log` one
step out): far from focus the measure is nearly flat, and a noise bump next to
a wrong landing is not focus. A region whose measure does
not change across the reads has no texture to focus on: it is refused. A peak
at or beyond a soft limit is never reported as focus. Every move passes the
instrument's SafeStage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hdme_focus.calibration.model import Calibration, RoiCalibration
from hdme_focus.core.frame import Frame, to_gray_float
from hdme_focus.core.roi import Roi
from hdme_focus.drivers.base import Camera
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.focus_measures import focus_measures
from hdme_focus.instrument.autofocus import HdmeOptions, autofocus_hdme, estimate_roi
from hdme_focus.instrument.devices import Instrument
from hdme_focus.instrument.search import SearchOptions, autofocus_brent
from hdme_focus.instrument.session import AutofocusRefused, AutofocusResult, Session

Fallback = Literal["brent", "refuse"]
BRACKET_MARGIN = 0.2  # a peak this share of a step inside the outermost reads is bracketed
Point = tuple[float, float]  # (position of the frame in mm, log focus measure)
F64 = NDArray[np.float64]


@dataclass(frozen=True)
class RefineOptions:
    """How the hybrid reads the focus measure after the jump."""

    step_dof: float = 1.0  # spacing of the reads, in depths of focus (1/k)
    width_dof: float = 1.0  # w of the focus-measure model, in depths of focus
    max_reads: int = 4  # captures after the jump before the readings count as disagreeing
    measure: str = "tenengrad"
    use_start: bool = True  # the jump's first frame counts as a reading
    # ... when it is this near the landing. Measured on the simulator (starts within +-10
    # DOF, 162 trials): 3 DOF 100 % at 4 captures; 8 DOF 100 % at 3; 12 DOF 98 % at 3 (a
    # broad focus-measure peak misread from a far start's flattened measure)
    start_within_dof: float = 8.0
    agree_sigmas: float = 3.0  # peak vs landing: allowed multiples of the blur reading's error
    agree_min_dof: float = 2.0  # ... but never less than this many DOF
    min_contrast_log: float = 0.05  # log-measure range below this: no texture, refused
    min_peak_drop_log: float = 0.2  # a peak's model drop one step out, at least (_stands_out)
    fallback: Fallback = "brent"
    straddle: bool = True  # after a move, read a step either side of the landing, not at it
    brent_halfwidth_dof: float = 6.0  # fallback window around the landing, within soft limits


@dataclass(frozen=True)
class PeakFit:
    """The focus-measure model fitted to the readings."""

    z0_mm: float
    height_log: float  # A
    decay: float  # c
    width_mm: float  # w
    rms_log: float

    def log_measure(self, position_mm: float) -> float:
        return self.height_log - self.decay * math.log1p(
            ((position_mm - self.z0_mm) / self.width_mm) ** 2
        )


def fit_peak(points: Sequence[Point], width_mm: float) -> PeakFit | None:
    """Least-squares fit of log FM = A - c log(1 + ((z - z0)/w)^2); None without a peak (c <= 0).

    For each z0, A and c are linear; z0 is found on a grid over the readings
    (plus two widths each side) and refined on a finer grid around the best point
    (spacing 1/160000 of the span: far below any stage's step).
    """
    if len(points) < 3 or not width_mm > 0:
        return None
    z = np.asarray([p for p, _ in points], dtype=np.float64)
    y = np.asarray([v for _, v in points], dtype=np.float64)

    def costs(z0s: F64) -> F64:
        """Residual sum of squares of the best (A, c) at each z0; inf where c <= 0.

        For fixed z0 the model is linear, y = A - c g: the closed-form 2-parameter
        least squares, for every z0 at once."""
        g = np.log1p(((z[None, :] - z0s[:, None]) / width_mm) ** 2)
        gm, ym = g.mean(axis=1, keepdims=True), y.mean()
        var = ((g - gm) ** 2).sum(axis=1)
        cov = ((g - gm) * (y - ym)).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(var > 0, -cov / var, 0.0)
        a = ym + c * gm[:, 0]
        rss = ((y[None, :] - (a[:, None] - c[:, None] * g)) ** 2).sum(axis=1)
        return np.where(c > 0, rss, np.inf)

    lo, hi = float(z.min()) - 2 * width_mm, float(z.max()) + 2 * width_mm
    # a grid over the readings, then a finer one around its best point (numpy only: the
    # hybrid runs in every one-shot `autofocus`, and scipy.optimize costs ~0.4 s to import)
    z0 = lo
    for _ in range(2):
        grid = np.linspace(lo, hi, 801)
        cost = costs(grid)
        if not np.any(np.isfinite(cost)):
            return None
        i = int(np.argmin(cost))
        z0 = float(grid[i])
        step = float(grid[1] - grid[0])
        lo, hi = z0 - step, z0 + step
    g = np.log1p(((z - z0) / width_mm) ** 2)
    c = float(-np.cov(g, y, bias=True)[0, 1] / np.var(g))
    a = float(y.mean() + c * g.mean())
    rss = float(np.sum((y - (a - c * g)) ** 2))
    return PeakFit(z0, a, c, width_mm, math.sqrt(rss / len(points)))


def roi_cal_for(calibration: Calibration, roi: Roi, use_global: bool) -> RoiCalibration:
    """The V-curve the jump read with (see autofocus.calibration_for)."""
    return calibration.for_roi(None if use_global else roi.as_tuple())[0]


class _Remembering:
    """A camera that keeps the frames it delivers (the jump's first frame is a free reading)."""

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.frames: list[Frame] = []

    def capture(self) -> Frame:
        frame = self.camera.capture()
        self.frames.append(frame)
        return frame

    def close(self) -> None:
        return None


def frame_position_mm(frame: Frame) -> float:
    """Where the image was taken: the camera's own position when it reports one (replay)."""
    return float(frame.meta.get("camera_position_mm", frame.position_mm))


def log_measure(frame: Frame, roi: Roi, measure: str) -> float:
    gray = to_gray_float(frame.image, frame.bit_depth)
    return math.log(max(focus_measures(gray, roi, (measure,))[measure], 1e-30))


def autofocus_hybrid(
    instrument: Instrument,
    roi: Roi,
    estimator: DefocusEstimator,
    calibration: Calibration,
    options: HdmeOptions | None = None,
    refine: RefineOptions | None = None,
) -> AutofocusResult:
    """The HDME jump (see autofocus.py), then the focus-measure refinement (module notes).

    `options.verify` adds one capture at the final position: in focus when its
    measure is within the model's drop at the tolerance of the peak.
    `options.max_tries` is not used: the refinement replaces the retries.
    """
    hopts = options or HdmeOptions()
    ropts = refine or RefineOptions()
    if ropts.max_reads < 2:
        raise ValueError(f"max_reads {ropts.max_reads}: the refinement needs at least 2 reads")
    if not (ropts.step_dof > 0 and ropts.width_dof > 0):
        raise ValueError("step_dof and width_dof must be positive")
    remembering = _Remembering(instrument.camera)
    jump_inst = replace(instrument, camera=remembering)
    jump_opts = replace(hopts, verify=False, max_tries=1, save_state=False)
    try:
        result = autofocus_hdme(jump_inst, roi, estimator, calibration, jump_opts)
    except AutofocusRefused as exc:
        if not _searchable(exc.result, hopts.thresholds.max_saturated_fraction):
            raise
        assert exc.result is not None
        result = exc.result
        result.method = "hybrid"
        refiner = _Refiner(instrument, roi, estimator, calibration, hopts, ropts, result)
        refiner.search_unread(str(result.refused))
        return _done(result, roi, hopts)
    result.method = "hybrid"
    refiner = _Refiner(instrument, roi, estimator, calibration, hopts, ropts, result)
    refiner.run(remembering.frames[0])
    return _done(result, roi, hopts)


def _searchable(result: AutofocusResult | None, max_saturated: float) -> bool:
    """A first reading refused only for its confidence or range: the region has texture,
    the blur reading is unusable, a bounded search can still find focus. Too little
    texture, saturation and focus outside the soft limits stay refused."""
    if result is None or result.captures != 1 or not result.measurements:
        return False
    first = result.measurements[0]
    sigma = first.get("sigma_px", math.nan)
    if not math.isfinite(sigma) or first.get("saturated_fraction", 1.0) > max_saturated:
        return False
    return result.refused is not None and "soft limits" not in result.refused


def _done(result: AutofocusResult, roi: Roi, hopts: HdmeOptions) -> AutofocusResult:
    """Remember a successful focus as the next prior."""
    if result.in_focus is not False and hopts.state_file is not None:
        from hdme_focus.instrument.prior import save_focus

        save_focus(hopts.state_file, roi, result.final_mm)
    return result


class _Refiner:
    """The reads, the fit and the decision after the jump, in one result."""

    def __init__(
        self,
        instrument: Instrument,
        roi: Roi,
        estimator: DefocusEstimator,
        calibration: Calibration,
        hopts: HdmeOptions,
        ropts: RefineOptions,
        result: AutofocusResult,
    ) -> None:
        self.inst = instrument
        self.roi = roi
        self.estimator = estimator
        self.roi_cal = roi_cal_for(calibration, roi, hopts.global_calibration)
        self.frames: dict[float, Frame] = {}
        self.hopts = hopts
        self.ropts = ropts
        self.result = result
        self.run_ = Session(instrument, result)
        self.run_._moves0 = instrument.stage.moves - result.moves  # continue the jump's count
        roi_cal = self.roi_cal
        self.dof = result.dof_mm
        self.step = ropts.step_dof * self.dof
        self.width = ropts.width_dof * self.dof
        self.landing = result.final_mm
        sigma = result.measured_sigma_px
        self.sigma_err_mm = roi_cal.distance_error_mm(sigma) if math.isfinite(sigma) else math.inf
        self.points: list[Point] = []
        self.near: list[float] = []  # reads taken after the jump (positions)
        self.info: dict[str, Any] = {"measure": ropts.measure, "step_mm": self.step}

    # -- reads
    def _add(self, frame: Frame, near: bool) -> None:
        with self.run_.compute():
            pos = frame_position_mm(frame)
            value = log_measure(frame, self.roi, self.ropts.measure)
            if all(abs(pos - p) > 1e-9 for p, _ in self.points):
                self.points.append((pos, value))
            if near:
                self.near.append(pos)
                self.frames[pos] = frame
            self.result.measurements.append({"position_mm": pos, "log_measure": value})

    def _read_at(self, target_mm: float) -> None:
        safe = self.inst.stage
        self.run_.move(min(max(target_mm, safe.min_mm), safe.max_mm))
        self._add(self.run_.capture(), near=True)

    # -- the procedure
    def run(self, first: Frame) -> None:
        r, safe = self.ropts, self.inst.stage
        lo, hi = safe.min_mm, safe.max_mm
        start_pos = frame_position_mm(first)
        moved = abs(self.landing - self.result.start_mm) > 1e-12
        if r.use_start and (
            not moved or abs(start_pos - self.landing) <= r.start_within_dof * self.dof
        ):
            self._add(first, near=not moved)
        # onward from the start: with the start behind, the reads span both sides of a
        # landing that over- or undershot by up to a step
        away = 1.0 if self.landing >= self.result.start_mm else -1.0
        if not moved:
            away = 1.0 if self.landing - lo >= hi - self.landing else -1.0
        elif not self.ropts.straddle:
            self._read_at(self.landing)
        plan = [self.landing + away * self.step, self.landing - away * self.step]
        if moved and self.ropts.straddle:
            plan.reverse()
            if len(self.points) + len(plan) < 3:  # the start is too far to be a reading
                plan.append(self.landing)
        fit: PeakFit | None = None
        why = ""
        reads = len(self.near) - (0 if moved else 1)
        while True:
            if len(self.points) >= 3:
                fit = fit_peak(self.points, self.width)
                ok, why, nxt = self._judge(fit)
                if ok:
                    break
                if nxt is not None:
                    plan = [nxt]
            if reads >= r.max_reads:
                fit = None
                break
            target = plan.pop(0) if plan else None
            if target is None:
                fit = None
                why = why or "no peak of the focus measure"
                break
            self._read_at(target)
            reads += 1
        self._contrast_check()
        if fit is None:
            self._disagree(why or f"no peak of the focus measure within {r.max_reads} reads")
            return
        if not self._agrees(fit):
            off_dof = abs(fit.z0_mm - self.landing) / self.dof
            self._disagree(
                f"the focus measure peaks at {fit.z0_mm:.4f} mm, {off_dof:.1f} DOF from where "
                f"the blur reading put focus ({self.landing:.4f} mm)"
            )
            return
        if not lo < fit.z0_mm < hi:
            self._refuse_edge(fit.z0_mm)
        self._finish(fit)

    def _judge(self, fit: PeakFit | None) -> tuple[bool, str, float | None]:
        """(accept, why not, where to read next).

        Accepted: the fitted peak lies between the reads taken after the jump, and
        either the best of them has a read on each side or the peak is clearly
        inside (a peak at the outermost read is extrapolated from the start's tail).
        Otherwise the next read is one step beyond an outermost best read, or at
        the fitted peak.
        """
        near = sorted({p for p in self.near if any(abs(p - q) <= 1e-9 for q, _ in self.points)})
        if not near:
            return False, "no read after the jump", None
        value = dict(self.points)
        best = max(near, key=lambda p: value[p])
        step = self.step
        worst = min(near, key=lambda p: value[p])
        if fit is not None and not self._stands_out(fit):
            # a bump in a flat measure (far from any focus) is the camera's noise, not a
            # peak: read on towards where the measure rises
            outer = max((near[0], near[-1]), key=lambda p: value[p])
            return (
                False,
                "the focus measure shows no peak above its noise",
                (outer + (step if outer == near[-1] else -step)),
            )
        if fit is not None and near[0] < fit.z0_mm < near[-1]:
            interior = near[0] < best < near[-1]
            margin = BRACKET_MARGIN * step
            if interior or near[0] + margin <= fit.z0_mm <= near[-1] - margin:
                if interior or self._near_by_blur(best, fit.z0_mm):
                    return True, "", None
                # the blur at the best read says focus is farther than the fit puts it
                return (
                    False,
                    "the blur reading places focus beyond the reads",
                    best + (math.copysign(step, best - worst)),
                )
        why = (
            "the focus measure shows no peak"
            if fit is None
            else "the focus-measure peak is not bracketed by the reads"
        )
        if best == near[-1]:
            return False, why, best + step
        if best == near[0]:
            return False, why, best - step
        assert fit is not None
        return False, why, min(max(fit.z0_mm, near[0] - step), near[-1] + step)

    def _stands_out(self, fit: PeakFit) -> bool:
        """Whether the fitted peak rises above the noise: the model drops by at least
        `min_peak_drop_log` one read step from it. Far from focus the measure is nearly
        flat, and three reads of it can still show a middle one highest: hdme-lite-conf,
        sent 8.7 DOF off by a wrong reading, once "refined" onto such a bump (the log
        measure varying by 0.06). Real peaks drop by 0.47-1.4 (the simulator tests) and
        0.67-0.85 (the replayed flake field and PCB sweep); the fit's scatter is no
        guide, the fixed-width model fits real curves to 0.3-0.5 in log."""
        drop = fit.log_measure(fit.z0_mm) - fit.log_measure(fit.z0_mm + self.step)
        return drop >= self.ropts.min_peak_drop_log

    def _near_by_blur(self, position_mm: float, peak_mm: float) -> bool:
        """Whether the blur of the frame at `position_mm` allows focus at `peak_mm`.

        With reads on one side of the peak only, the fit leans on the far start
        frame's measure; a blur that puts the best read clearly farther from focus
        than the fit does (on the slope of the V, where blur is precise) vetoes it.
        """
        frame = self.frames.get(position_mm)
        if frame is None:
            return True
        with self.run_.compute():
            stats = estimate_roi(frame, self.roi, self.estimator, self.hopts.margin_px)
        cal = self.roi_cal
        if not math.isfinite(stats.sigma_px):
            return True
        d = cal.distance_mm(stats.sigma_px)
        err = cal.distance_error_mm(stats.sigma_px)
        self.info["best_read_distance_mm"] = d
        return d - 2.0 * err <= abs(peak_mm - position_mm) + self.step

    def search_unread(self, why: str) -> None:
        """The first reading was refused (confidence or range): search around the start."""
        result = self.result
        result.refused = None
        self.landing = result.start_mm
        self.info["first_reading_refused"] = why
        self._brent(f"the first blur reading was refused ({why})")

    def _agrees(self, fit: PeakFit) -> bool:
        r = self.ropts
        allowed = max(r.agree_min_dof * self.dof, r.agree_sigmas * self.sigma_err_mm)
        self.info["allowed_mm"] = allowed
        return abs(fit.z0_mm - self.landing) <= allowed

    def _contrast_check(self) -> None:
        values = [v for _, v in self.points]
        if len(values) >= 2 and max(values) - min(values) < self.ropts.min_contrast_log:
            self._refuse(
                f"the focus measure does not change across {len(values)} reads "
                f"({max(values) - min(values):.3f} in log): the region has too little texture "
                "to focus on; choose a textured region"
            )

    # -- outcomes
    def _refuse(self, why: str) -> None:
        result = self.result
        result.refused = why
        result.final_mm = self.inst.stage.position_mm()
        result.refine = self.info | {"outcome": "refused"}
        raise AutofocusRefused(f"autofocus refused: {why}", result)

    def _refuse_edge(self, z0: float) -> None:
        safe = self.inst.stage
        self._refuse(
            f"the focus measure peaks at {z0:.4f} mm, at or beyond the soft limits "
            f"[{safe.min_mm:.4f}, {safe.max_mm:.4f}] mm; check stage.min_mm/max_mm and the ROI"
        )

    def _disagree(self, why: str) -> None:
        self.info["disagreement"] = why
        if self.ropts.fallback == "refuse":
            self._refuse(f"the blur reading and the focus measure disagree: {why}")
        self._brent(why)

    def _brent(self, why: str) -> None:
        result, safe = self.result, self.inst.stage
        half = self.ropts.brent_halfwidth_dof * self.dof
        if math.isfinite(self.sigma_err_mm):
            half = max(half, min(3.0 * self.sigma_err_mm, 2.0 * half))
        window = (max(self.landing - half, safe.min_mm), min(self.landing + half, safe.max_mm))
        opts = SearchOptions(range_mm=window, xatol_mm=0.1 * self.dof, widen=True)
        try:
            searched = autofocus_brent(self.inst, self.roi, opts)
        except AutofocusRefused as exc:
            if exc.result is not None:
                self._merge(exc.result)
            result.refused = (
                f"{why}; the Brent fallback: {exc.result.refused if exc.result else exc}"
            )
            result.refine = self.info | {"outcome": "brent-refused"}
            raise AutofocusRefused(f"autofocus refused: {result.refused}", result) from None
        self._merge(searched)
        result.target_mm = searched.target_mm
        result.final_mm = searched.final_mm
        result.direction = f"{result.direction or 'unread'}+brent"
        result.refine = self.info | {"outcome": "brent", "window_mm": list(window)}

    def _merge(self, other: AutofocusResult) -> None:
        result = self.result
        result.captures += other.captures
        result.moves += other.moves
        result.device_time_s += other.device_time_s
        result.compute_time_s += other.compute_time_s
        result.measurements.extend(other.measurements)

    def _finish(self, fit: PeakFit) -> None:
        result = self.result
        result.target_mm = fit.z0_mm
        self.run_.move(fit.z0_mm)
        result.direction = f"{result.direction}+refined"
        self.info |= {
            "outcome": "refined",
            "peak_mm": fit.z0_mm,
            "landing_mm": self.landing,
            "decay": fit.decay,
            "rms_log": fit.rms_log,
            "reads": len(self.near),
        }
        if self.hopts.verify:
            frame = self.run_.capture()
            with self.run_.compute():
                value = log_measure(frame, self.roi, self.ropts.measure)
                tol = self.hopts.tolerance_dof * self.dof
                floor = fit.log_measure(fit.z0_mm + tol) - max(fit.rms_log, 0.02)
                result.in_focus = value >= floor
                self.info["verified_log_measure"] = value
                result.measurements.append(
                    {"position_mm": frame_position_mm(frame), "log_measure": value}
                )
        result.final_mm = self.inst.stage.position_mm()
        result.refine = self.info
