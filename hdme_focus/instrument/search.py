"""Classical autofocus searches, no calibration needed: bounded Brent and coarse-fine sweep.

`brent` minimises the negative log focus measure with scipy's bounded Brent
search, as Micro-Manager's OughtaFocus does; `sweep` scans coarse then fine and
fits a parabola to the log measure around the peak. Every move goes through the
instrument's SafeStage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hdme_focus.core.frame import to_gray_float
from hdme_focus.core.roi import Roi
from hdme_focus.focus_measures import focus_measures
from hdme_focus.instrument.devices import Instrument
from hdme_focus.instrument.session import AutofocusRefused, AutofocusResult, Session

Score = Callable[[float], float]
Seen = dict[float, float]
# finds the target position from the scorer, its memo and the search range
Finder = Callable[[Score, Seen, float, float], float]


@dataclass
class SearchOptions:
    range_mm: tuple[float, float] | None = None  # None: the soft limits
    measure: str = "tenengrad"
    xatol_mm: float | None = None  # None: range / 400
    max_evaluations: int = 40
    coarse_points: int = 9
    fine_points: int = 7
    widen: bool = False  # focus beyond the window's edge: slide the window, within soft limits


def search_range(instrument: Instrument, opts: SearchOptions) -> tuple[float, float]:
    safe = instrument.stage
    lo, hi = opts.range_mm if opts.range_mm is not None else (safe.min_mm, safe.max_mm)
    lo, hi = max(lo, safe.min_mm), min(hi, safe.max_mm)
    if not hi > lo:
        raise ValueError(f"search range [{lo}, {hi}] mm is empty inside the soft limits")
    return lo, hi


def _scorer(run: Session, roi: Roi, measure_name: str) -> tuple[Score, Seen]:
    """Move, capture and return the log focus measure; memoised by position."""
    seen: dict[float, float] = {}
    checked = [False]

    def score(position_mm: float) -> float:
        key = round(float(position_mm), 9)
        if key in seen:
            return seen[key]
        run.move(key)
        frame = run.capture()
        with run.compute():
            gray = to_gray_float(frame.image, frame.bit_depth)
            if not checked[0]:
                roi.check_inside(gray.shape[1], gray.shape[0])
                checked[0] = True
            value = focus_measures(gray, roi, (measure_name,))[measure_name]
            seen[key] = math.log(max(value, 1e-30))
            run.result.measurements.append({"position_mm": key, "log_measure": seen[key]})
        return seen[key]

    return score, seen


EDGE_MARGIN_LOG = 0.05  # an edge reading within 5 % of the best: the peak is not inside


def _edge_peak(score: Score, seen: Seen, lo: float, hi: float) -> float | None:
    """The window edge the focus lies towards when it is not bracketed, else None.

    Bracketed means the measure at both edges is clearly below the best reading
    inside (a search landing inside on noise proves nothing: on a rising slope
    Brent settles wherever the noise makes a bump). Both edges are read (from
    the memo when already evaluated).
    """
    e_lo, e_hi = score(lo), score(hi)
    best = max(v for p, v in seen.items() if lo - 1e-9 <= p <= hi + 1e-9)
    if max(e_lo, e_hi) < best - EDGE_MARGIN_LOG:
        return None
    return lo if e_lo >= e_hi else hi


def _search(
    method: str, instrument: Instrument, roi: Roi, opts: SearchOptions, find: Finder
) -> AutofocusResult:
    """What every search shares: the record, the range, the scorer, the bracketing check
    and the one final move.

    A best reading on the window's edge is never reported as the focus: with
    `opts.widen` the window slides past that edge (within the soft limits) until
    the peak is inside; otherwise, or at a soft limit, the stage goes back to the
    start and AutofocusRefused says "focus not bracketed".
    """
    safe = instrument.stage
    result = AutofocusResult(method=method, roi=roi.spec, start_mm=safe.position_mm())
    run = Session(instrument, result)
    window = search_range(instrument, opts)
    score, seen = _scorer(run, roi, opts.measure)
    target = find(score, seen, *window)
    edge = _edge_peak(score, seen, *window)
    full = (safe.min_mm, safe.max_mm)
    while edge is not None and opts.widen and edge not in full:
        # slide past the edge the measure rises towards (10 % overlap): a local move,
        # not a search of the whole range for any peak
        span = window[1] - window[0]
        if edge == window[1]:
            window = (window[1] - 0.1 * span, min(window[1] + 0.9 * span, safe.max_mm))
        else:
            window = (max(window[0] - 0.9 * span, safe.min_mm), window[0] + 0.1 * span)
        target = find(score, seen, *window)
        edge = _edge_peak(score, seen, *window)
    if edge is not None:
        _refuse_unbracketed(run, result, edge, window, at_limit=edge in full)
    result.target_mm = target
    run.move(target)
    result.final_mm = safe.position_mm()
    result.tries = 1
    return result


def _refuse_unbracketed(
    run: Session, result: AutofocusResult, edge: float, window: tuple[float, float], at_limit: bool
) -> None:
    result.target_mm = math.nan
    run.move(result.start_mm)
    result.final_mm = run.inst.stage.position_mm()
    fix = (
        "focus may lie beyond the soft limits; check stage.min_mm/max_mm and the ROI"
        if at_limit
        else "widen --span, or pass --widen to follow the focus measure within the soft limits"
    )
    result.refused = (
        f"focus not bracketed: the focus measure is highest at the {edge:.4f} mm edge of the "
        f"searched window [{window[0]:.4f}, {window[1]:.4f}] mm; {fix}"
    )
    raise AutofocusRefused(result.refused + "; stage returned to the start", result)


def autofocus_brent(
    instrument: Instrument, roi: Roi, options: SearchOptions | None = None
) -> AutofocusResult:
    """Bounded Brent search for the focus-measure peak, then one move to it (refused when
    the peak is not bracketed by the window)."""
    opts = options or SearchOptions()

    def find(score: Score, seen: Seen, lo: float, hi: float) -> float:
        from scipy.optimize import minimize_scalar  # ~0.3 s: only when searching

        xatol = opts.xatol_mm if opts.xatol_mm is not None else (hi - lo) / 400.0
        res = minimize_scalar(
            lambda z: -score(z),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": xatol, "maxiter": opts.max_evaluations},
        )
        inside = {p: v for p, v in seen.items() if lo - 1e-9 <= p <= hi + 1e-9}
        best = max(inside, key=lambda p: inside[p])
        return float(res.x) if -float(res.fun) >= inside[best] else best

    return _search("brent", instrument, roi, opts, find)


def parabolic_peak(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Vertex of the least-squares parabola through points around a peak (argmax if not concave)."""
    i = int(np.argmax(y))
    lo, hi = max(0, i - 2), min(len(x), i + 3)
    xs, ys = x[lo:hi], y[lo:hi]
    if len(xs) >= 3:
        a, b, _ = np.polyfit(xs, ys, 2)
        if a < 0:
            vertex = -b / (2 * a)
            if xs.min() <= vertex <= xs.max():
                return float(vertex)
    return float(x[i])


def autofocus_sweep(
    instrument: Instrument, roi: Roi, options: SearchOptions | None = None
) -> AutofocusResult:
    """Coarse scan over the range, fine scan around the best, parabolic peak, one move
    (refused when the peak is not bracketed by the window)."""
    opts = options or SearchOptions()
    safe = instrument.stage

    def find(score: Score, seen: Seen, lo: float, hi: float) -> float:
        coarse = np.linspace(lo, hi, max(3, opts.coarse_points))
        if abs(safe.position_mm() - hi) < abs(safe.position_mm() - lo):
            coarse = coarse[::-1]  # start at the nearer end
        for z in coarse:
            score(float(z))
        step = float(abs(coarse[1] - coarse[0]))
        peak = max((float(z) for z in coarse), key=lambda p: seen[round(p, 9)])
        if peak in (lo, hi):
            return peak  # on the edge: not bracketed, no fine scan
        fine = np.linspace(max(lo, peak - step), min(hi, peak + step), max(3, opts.fine_points))
        if abs(safe.position_mm() - fine[-1]) < abs(safe.position_mm() - fine[0]):
            fine = fine[::-1]
        for z in fine:
            score(float(z))
        xs = np.asarray(sorted(p for p in seen if fine.min() - 1e-9 <= p <= fine.max() + 1e-9))
        return parabolic_peak(xs, np.asarray([seen[p] for p in xs]))

    return _search("sweep", instrument, roi, opts, find)
