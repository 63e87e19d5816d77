"""The focus prior: where the HDME autofocus expects focus, and how sure that is.

One frame gives the distance to focus but not the side. The prior picks the
side: the last successful focus of a region overlapping this one (kept in
`<paths.output_dir>/autofocus-state.json`, written atomically), else the
calibration's z0 for the region.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdme_focus.calibration.model import RoiCalibration
from hdme_focus.core.atomic import write_json_atomic
from hdme_focus.core.roi import Roi

STATE_FILE = "autofocus-state.json"
STATE_FORMAT = "hdme-focus-autofocus-state"


@dataclass(frozen=True)
class Prior:
    """Where focus is expected, and how sure that is (1 sigma, mm)."""

    position_mm: float
    uncertainty_mm: float
    source: str  # "last-focus" | "calibration"


def state_path(output_dir: Path | str) -> Path:
    """Where the last successful focus per region is kept."""
    return Path(output_dir) / STATE_FILE


def load_state(path: Path | None) -> list[dict[str, Any]]:
    """Entries {roi: [x, y, w, h], position_mm, time}; an unreadable file counts as empty."""
    if path is None or not Path(path).is_file():
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return []
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        return []
    entries = data.get("entries", [])
    return [e for e in entries if isinstance(e, dict) and {"roi", "position_mm"} <= set(e)]


def save_focus(path: Path | None, roi: Roi, position_mm: float, keep: int = 32) -> None:
    """Record a successful focus (replacing the entry of the same ROI), atomically."""
    if path is None:
        return
    path = Path(path)
    entries = [e for e in load_state(path) if list(e["roi"]) != list(roi.as_tuple())]
    entries.append(
        {
            "roi": list(roi.as_tuple()),
            "position_mm": float(position_mm),
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )
    data = {"format": STATE_FORMAT, "version": 1, "entries": entries[-keep:]}
    write_json_atomic(path, data)


def choose_prior(
    roi: Roi,
    roi_cal: RoiCalibration,
    state: Sequence[dict[str, Any]],
    uncertainty_mm: float | None = None,
) -> Prior:
    """The last focus of a region overlapping by half or more, else the calibration's z0.

    Default uncertainty: half a depth of focus, or three standard errors of the
    calibrated z0 (or the spread of z0 over regions for an uncalibrated ROI)
    if larger.
    """
    dof = roi_cal.dof_mm
    best = max(state, key=lambda e: roi.covered_by(e["roi"]), default=None)
    if best is not None and roi.covered_by(best["roi"]) >= 0.5:
        u = uncertainty_mm if uncertainty_mm is not None else 0.5 * dof
        return Prior(float(best["position_mm"]), u, "last-focus")
    # an uncovered ROI gets the all-regions summary, whose stderr is the z0 spread
    u = uncertainty_mm if uncertainty_mm is not None else max(0.5 * dof, 3.0 * roi_cal.z0_stderr_mm)
    return Prior(roi_cal.z0_mm, u, "calibration")
