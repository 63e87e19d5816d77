"""Where calibrations are kept: one file per sweep, and the active one autofocus reads.

Calibrating scene B after scene A used to replace A's file without a word. Now
every calibration is kept under `<output_dir>/calibrations/<sweep name>.json`
(a different sweep of the same name gets `-2`, `-3`, ...), the active file is
updated, and whatever an existing file held is named on the line. An active
file that has no kept copy (written by an older version) is kept first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from hdme_focus.calibration.model import Calibration
from hdme_focus.core.atomic import write_bytes_atomic
from hdme_focus.core.errors import UsageError

KEPT_DIR = "calibrations"


@dataclass(frozen=True)
class SavedCalibration:
    """The files written and, when an existing calibration was replaced, which one."""

    path: Path  # the file autofocus reads (the active one, or --out)
    kept: Path | None  # the per-sweep copy, when one was written
    replaced: str | None  # "the calibration of sweep X (created T)" when one was replaced


def _sweep_of(path: Path) -> tuple[str, str] | None:
    """(sweep path, created) of a calibration file, or None when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data["sweep"]["path"]), str(data.get("created", "?"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _held_by(path: Path) -> tuple[str, str] | None:
    """What calibration `path` holds; refuse to replace a file that is not a calibration."""
    if not path.exists():
        return None
    held = _sweep_of(path)
    if held is None:
        raise UsageError(
            f"{path} exists and is not an hdme-focus calibration; move it away or choose "
            "another --out"
        )
    return held


def _describe(sweep: tuple[str, str]) -> str:
    return f"the calibration of sweep {sweep[0]} (created {sweep[1]})"


def _slug(sweep_path: str) -> str:
    name = Path(sweep_path).name or "sweep"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sweep"


def kept_path_for(sweep_path: str, output_dir: Path) -> Path:
    """The per-sweep file for a sweep's calibration: same sweep -> same file, else a new name."""
    folder = Path(output_dir) / KEPT_DIR
    stem = _slug(sweep_path)
    n = 1
    while True:
        candidate = folder / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
        held = _sweep_of(candidate) if candidate.exists() else None
        if not candidate.exists() or (held is not None and held[0] == sweep_path):
            return candidate
        n += 1


def _write(calibration: Calibration, path: Path) -> str | None:
    """Write atomically; describe the calibration it replaced, if any."""
    old = _held_by(path)
    calibration.save(path)
    return _describe(old) if old is not None else None


def save_calibration(
    calibration: Calibration, *, active: Path, output_dir: Path, out: Path | None = None
) -> SavedCalibration:
    """Write `out` if given, else the per-sweep copy and the active file; say what was replaced."""
    if out is not None:
        return SavedCalibration(Path(out), None, _write(calibration, Path(out)))
    active = Path(active)
    old = _held_by(active)
    replaced = None
    if old is not None:
        # an active file with no kept copy (older versions wrote only this): keep it first
        keep_old = kept_path_for(old[0], output_dir)
        if not keep_old.exists():
            write_bytes_atomic(keep_old, active.read_bytes())
        replaced = f"{_describe(old)}, kept in {keep_old}"
    kept = kept_path_for(calibration.sweep.path, output_dir)
    calibration.save(kept)
    calibration.save(active)
    return SavedCalibration(active, kept, replaced)
