"""The focus sweep: move through a range, capture, measure, record before the next move.

Everything that can be refused is refused before the first motion and before
anything is written: the whole path against the soft limits and the maximum
step, the ROIs against the frame, the output directory. During the sweep the
stage is stopped on any exception or Ctrl-C and the manifest is marked partial
with the reason, so the rows already written stay a valid record.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hdme_focus.core.errors import DeviceError, InterruptedBySignal
from hdme_focus.core.frame import Frame, to_gray_float
from hdme_focus.core.roi import Roi
from hdme_focus.drivers.base import MotionRefused
from hdme_focus.estimation.base import DefocusEstimator, roi_reading
from hdme_focus.estimation.noise import frame_noise
from hdme_focus.focus_measures import DEFAULT_MEASURES, check_measures, focus_measures
from hdme_focus.instrument.devices import Instrument
from hdme_focus.records import (
    BASE_COLUMNS,
    SweepWriter,
    check_out_dir,
    check_roi_name,
    roi_column,
)

ExtraHook = Callable[[Frame, dict[str, Roi]], dict[str, float]]
Progress = Callable[[int, int, float], None]  # (frames done, frames planned, position_mm)

MAX_POSITIONS = 100_000
SIGMA_QUANTITY = "sigma_px"
# median local std (full scale) of the pixels that blur reading used (`RoiSigma.contrast`):
# calibrate's contrast curves, so reusing the recorded blur reads no frame again
CONTRAST_QUANTITY = "contrast"


def plan_positions(start_mm: float, stop_mm: float, step_mm: float) -> list[float]:
    """Evenly spaced positions from start towards stop (either direction), both inclusive
    when the span is a whole number of steps; ValueError on a non-positive step."""
    if not (math.isfinite(start_mm) and math.isfinite(stop_mm)):
        raise ValueError(f"start/stop must be finite, got {start_mm!r} and {stop_mm!r}")
    if not (math.isfinite(step_mm) and step_mm > 0):
        raise ValueError(f"step {step_mm!r} mm: must be a positive distance")
    span = abs(stop_mm - start_mm)
    n = math.floor(span / step_mm + 1e-6)
    if n + 1 > MAX_POSITIONS:
        raise ValueError(
            f"a step of {step_mm} mm over {span:.4f} mm gives {n + 1} positions "
            f"(more than {MAX_POSITIONS}); use a larger step or a shorter range"
        )
    sign = 1.0 if stop_mm >= start_mm else -1.0
    return [round(start_mm + sign * i * step_mm, 9) for i in range(n + 1)]


def default_rois(instrument: Instrument) -> dict[str, Roi]:
    """The simulated scene's named regions if the camera has any, else the centre quarter."""
    width, height = instrument.frame_size_px
    scene = getattr(instrument.camera, "scene", None)
    regions = getattr(scene, "regions", None) or {}
    rois = {str(name): Roi(*(int(v) for v in box)) for name, box in regions.items()}
    if rois:
        return rois
    return {"centre": Roi.centre_quarter(width, height)}


def sweep_columns(
    rois: Mapping[str, Roi],
    measures: Sequence[str],
    with_sigma: bool = False,
    extra_columns: Sequence[str] = (),
) -> list[str]:
    """The CSV columns of a sweep: base, per-ROI measures, per-ROI sigma and contrast,
    extras."""
    cols = list(BASE_COLUMNS)
    for name in rois:
        cols += [roi_column(name, m) for m in measures]
        if with_sigma:
            cols += [roi_column(name, SIGMA_QUANTITY), roi_column(name, CONTRAST_QUANTITY)]
    cols += list(extra_columns)
    return cols


def check_sweep(
    instrument: Instrument,
    positions_mm: Sequence[float],
    rois: Mapping[str, Roi],
    out_dir: Path | str | None = None,
    overwrite: bool = False,
) -> None:
    """Refuse the path, its steps, the ROIs and the output directory; moves and writes nothing.

    `run_sweep` calls this itself; callers may call it first to fail before
    showing progress.
    """
    safe = instrument.stage
    safe.check_range(positions_mm)
    for a, b in itertools.pairwise(positions_mm):
        safe.check_step(a, b)
    if not rois:
        raise ValueError("a sweep needs at least one ROI")
    width, height = instrument.frame_size_px
    for name, roi in rois.items():
        check_roi_name(name)
        roi.check_inside(width, height)
    if out_dir is not None:
        check_out_dir(Path(out_dir), overwrite)


def run_sweep(
    instrument: Instrument,
    positions_mm: Sequence[float],
    rois: Mapping[str, Roi],
    out_dir: Path | str,
    measures: Sequence[str] = DEFAULT_MEASURES,
    extra: ExtraHook | None = None,
    extra_columns: Sequence[str] = (),
    estimator: DefocusEstimator | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Record a sweep into `out_dir`; returns the directory.

    `extra(frame, rois)` may add values for `extra_columns` (declared up front);
    an `estimator` adds `<roi>_sigma_px`, the median blur over each ROI's
    textured pixels. On an exception or Ctrl-C the stage is stopped, the
    manifest says "partial" with the reason, and the exception propagates.
    """
    positions = [float(p) for p in positions_mm]
    rois = dict(rois)
    measures = check_measures(measures)
    if extra is None and extra_columns:
        raise ValueError("extra_columns given without an extra hook")
    check_sweep(instrument, positions, rois, out_dir, overwrite)
    meta = dict(metadata or {})
    if estimator is not None:
        meta.setdefault("estimator", estimator.name)
    meta.setdefault("measures", list(measures))
    writer = SweepWriter(
        Path(out_dir),
        config=instrument.config,
        rois=rois,
        positions_mm=positions,
        columns=sweep_columns(rois, measures, estimator is not None, extra_columns),
        overwrite=overwrite,
        metadata=meta,
    )
    writer.open()

    safe, clock = instrument.stage, instrument.clock
    t0 = clock.monotonic()
    total = len(positions)
    try:
        with safe.guard():
            for i, target in enumerate(positions):
                if i == 0:
                    safe.travel_to(target)
                else:
                    safe.move_to(target)
                frame = instrument.capture()
                if not math.isfinite(frame.position_mm):
                    raise DeviceError(
                        f"the stage reported position {frame.position_mm} after the move to "
                        f"{target:.4f} mm; a frame without a position cannot be recorded; check "
                        "the stage connection (`hdme-focus stage status`)"
                    )
                time_s = clock.monotonic() - t0
                values = _measure(frame, rois, measures, estimator)
                if extra is not None:
                    values.update(extra(frame, rois))
                writer.write(frame, time_s, values)
                if progress is not None:
                    progress(i + 1, total, frame.position_mm)
    except BaseException as exc:
        done = writer.rows_written
        if isinstance(exc, KeyboardInterrupt):
            reason = f"interrupted (Ctrl-C) after {done} of {total} frames"
        elif isinstance(exc, InterruptedBySignal):
            reason = f"interrupted ({exc.signal_name}) after {done} of {total} frames"
        else:
            kind = "refused" if isinstance(exc, MotionRefused) else "failed"
            reason = f"{kind} after {done} of {total} frames: {type(exc).__name__}: {exc}"
        _finish_partial(writer, reason)
        exc.add_note(f"partial sweep kept in {writer.out_dir} ({done} of {total} frames)")
        raise
    writer.finish("complete")
    return writer.out_dir


def _finish_partial(writer: SweepWriter, reason: str) -> None:
    """Mark the record partial without masking the exception that ended the sweep."""
    with contextlib.suppress(OSError):
        writer.finish("partial", reason)


def _measure(
    frame: Frame,
    rois: Mapping[str, Roi],
    measures: Sequence[str],
    estimator: DefocusEstimator | None,
) -> dict[str, float]:
    gray = to_gray_float(frame.image, frame.bit_depth)
    values: dict[str, float] = {}
    for name, roi in rois.items():
        for m, v in focus_measures(gray, roi, measures).items():
            values[roi_column(name, m)] = v
    if estimator is not None:
        # read as autofocus reads (roi_reading): the calibration fits what autofocus will see
        estimate = estimator.estimate(frame.image, frame.bit_depth)
        noise = frame_noise(gray)  # once per frame, for every region
        for name, roi in rois.items():
            reading = roi_reading(estimate, gray, roi.as_tuple(), noise)
            values[roi_column(name, SIGMA_QUANTITY)] = reading.sigma_px
            values[roi_column(name, CONTRAST_QUANTITY)] = reading.contrast
    return values
