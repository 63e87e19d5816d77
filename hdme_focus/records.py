"""Sweep records on disk: written as they are made, readable after any crash.

The one module that reads and writes the format: `sweep`, `calibrate`, the
replay driver and the CLI all go through it (the file names below are exported
as MANIFEST, TABLE, PLOT and FRAMES_DIR). A sweep directory holds

    sweep.json      manifest: config, ROIs, planned positions, columns, status
    sweep.csv       one row per frame, appended and fsynced before the next move
    frames/NNNNN.tif  each frame, its position/exposure/time/bit depth in the
                    TIFF description (JSON)
    sweep.png       the plot (written at the end, see plots.py)

The column set is declared in the manifest before the first row, so later
code can add columns (e.g. `<roi>_sigma_px`) without changing the format.
The manifest's status is "running" while the sweep runs and becomes
"complete" or "partial" (with the reason); a "running" manifest found later
means the writer died and is read as partial.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from hdme_focus.config import InstrumentConfig
from hdme_focus.core.atomic import atomic_write, fsync_dir, write_json_atomic
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import Frame, ImageInputError
from hdme_focus.core.roi import Roi

FORMAT = "hdme-focus-sweep"
FORMAT_VERSION = 1
TIFF_SUFFIXES = (".tif", ".tiff")
MANIFEST = "sweep.json"
TABLE = "sweep.csv"
PLOT = "sweep.png"
FRAMES_DIR = "frames"
BASE_COLUMNS: tuple[str, ...] = ("index", "position_mm", "time_s", "frame")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RecordError(UsageError):
    """A sweep directory that cannot be written or read; str() names the path and the fix."""


class OutputExistsError(RecordError):
    """An output directory already holds a result and overwriting was not asked for.

    `directory` and `what` let the CLI name its own flags for the fix.
    """

    def __init__(self, directory: Path, what: str) -> None:
        super().__init__(f"{directory}: already holds {what}; choose another or overwrite it")
        self.directory = Path(directory)
        self.what = what


class SweepExistsError(OutputExistsError):
    """The output directory already holds a sweep."""

    def __init__(self, directory: Path, state: str = "") -> None:
        super().__init__(directory, f"a sweep ({MANIFEST}){state}")


def roi_column(roi_name: str, quantity: str) -> str:
    """The CSV column of one per-ROI quantity, e.g. roi_column("A", "sigma_px") == "A_sigma_px"."""
    return f"{roi_name}_{quantity}"


def check_roi_name(name: str) -> str:
    """ROI names become column prefixes: letters, digits, '_', '.', '-'."""
    if not _NAME_RE.match(name):
        raise RecordError(
            f"ROI name {name!r}: use letters, digits, '_', '.' or '-' (it prefixes CSV columns)"
        )
    return name


def holds_sweep(directory: Path) -> bool:
    """True when `directory` already contains a sweep manifest or table."""
    d = Path(directory)
    return (d / MANIFEST).exists() or (d / TABLE).exists()


def check_out_dir(out_dir: Path, overwrite: bool = False) -> None:
    """Refuse an output path that is a file, holds a sweep (unless `overwrite`) or holds
    anything that is not a sweep (always: a user's files are never written over)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RecordError(f"output {out_dir}: exists and is not a directory")
    if holds_sweep(out_dir):
        if not overwrite:
            raise SweepExistsError(out_dir, _state_of(out_dir))
        return
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise RecordError(
                f"output {out_dir}: holds files that are not a sweep ({shown}); "
                "choose a new or empty folder"
            )


def _state_of(directory: Path) -> str:
    """ ", interrupted: ..." for a sweep whose manifest was left "running"; else ""."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(manifest, dict) or manifest.get("status") != "running":
        return ""
    try:
        rows = max(len((directory / TABLE).read_text(encoding="utf-8").splitlines()) - 1, 0)
    except OSError:
        rows = 0
    return f", {stale_reason(manifest, rows)}"


# --------------------------------------------------------------------------- durable writes


def _jsonable(meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def write_frame_tiff(path: Path, frame: Frame, index: int) -> None:
    """Write one frame as TIFF with its metadata as JSON in the description, atomically."""
    description = {
        "index": index,
        "position_mm": frame.position_mm,
        "exposure_ms": frame.exposure_ms,
        "timestamp_s": frame.timestamp_s,
        "bit_depth": frame.bit_depth,
        "meta": _jsonable(frame.meta),
    }
    atomic_write(
        path,
        lambda fh: tifffile.imwrite(
            fh, frame.image, description=json.dumps(description), metadata=None
        ),
    )


def read_image(path: Path) -> tuple[NDArray[Any], int | None]:
    """Pixels of any image file as stored (RGB order for colour) and its recorded bit depth.

    The one image-file reader: sweeps, replay, `estimate`, `fuse` and the training
    folders all read through it. A TIFF's bit depth comes from its description
    (written by this program), else None. ImageInputError says what is wrong.
    """
    import cv2

    path = Path(path)
    if path.is_dir():
        raise ImageInputError(
            f"{path}: is a directory, not an image; pass the files (e.g. {path}/*.png)"
        )
    if not path.exists():
        raise ImageInputError(f"{path}: no such file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            image, info = read_tiff(path)
        except RecordError as exc:
            raise ImageInputError(str(exc)) from None
        depth = info.get("bit_depth")
        return image, int(depth) if isinstance(depth, int | float) else None
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ImageInputError(
            f"{path}: not a readable image (PNG, TIFF, JPEG, BMP); check the file is complete"
        )
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB if raw.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return np.asarray(raw), None


def read_tiff(path: Path) -> tuple[NDArray[Any], dict[str, Any]]:
    """Pixels of a TIFF and the JSON of its description ({} when absent or not JSON).

    The one TIFF reader of the sweep format; the replay driver reads any TIFF through it.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            image = tif.asarray()
            text = tif.pages.first.description
    except FileNotFoundError:
        raise
    except Exception as exc:  # tifffile raises several types for corrupt files
        raise RecordError(f"{path}: not a readable TIFF frame ({exc})") from exc
    try:
        info = json.loads(text) if text else {}
    except json.JSONDecodeError:
        info = {}
    return image, info if isinstance(info, dict) else {}


def read_frame(path: Path) -> Frame:
    """Read a frame written by `write_frame_tiff` (metadata restored)."""
    image, info = read_tiff(path)
    return Frame(
        image=image,
        exposure_ms=float(info.get("exposure_ms", math.nan)),
        timestamp_s=float(info.get("timestamp_s", math.nan)),
        position_mm=float(info.get("position_mm", math.nan)),
        bit_depth=int(info.get("bit_depth", 8 if image.dtype == np.uint8 else 16)),
        meta=dict(info.get("meta", {})),
    )


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


# --------------------------------------------------------------------------- writer


class SweepWriter:
    """Writes one sweep directory row by row; every row is on disk when `write` returns.

    Usage: `open()` (manifest "running", CSV header), `write()` per frame,
    `finish("complete")` or `finish("partial", reason)`.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        config: InstrumentConfig,
        rois: Mapping[str, Roi],
        positions_mm: Sequence[float],
        columns: Sequence[str],
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.columns = tuple(columns)
        if self.columns[: len(BASE_COLUMNS)] != BASE_COLUMNS:
            raise ValueError(f"columns must start with {BASE_COLUMNS}, got {self.columns[:4]}")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"duplicate column names in {self.columns}")
        self.value_columns = self.columns[len(BASE_COLUMNS) :]
        for name in rois:
            check_roi_name(name)
        self.overwrite = overwrite
        self.rows_written = 0
        self._csv: io.TextIOWrapper | None = None
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "status": "running",
            "reason": None,
            "created": _now(),
            "finished": None,
            "rows": 0,
            "columns": list(self.columns),
            "rois": {name: _roi_dict(r) for name, r in rois.items()},
            "positions_mm": [float(p) for p in positions_mm],
            "config": config.model_dump(mode="json"),
            "metadata": dict(metadata or {}),
            "writer": {"pid": os.getpid(), "host": socket.gethostname()},
        }

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST

    @property
    def table_path(self) -> Path:
        return self.out_dir / TABLE

    def open(self) -> SweepWriter:
        check_out_dir(self.out_dir, self.overwrite)
        frames = self.out_dir / FRAMES_DIR
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.overwrite:
                self._remove_previous()
            frames.mkdir(exist_ok=True)
            write_json_atomic(self.manifest_path, self.manifest)
            self._csv = open(self.table_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise RecordError(f"output {self.out_dir}: cannot write ({exc.strerror})") from exc
        csv.writer(self._csv).writerow(self.columns)
        self._sync_table()
        fsync_dir(self.out_dir)
        return self

    def _remove_previous(self) -> None:
        """Delete only the files the previous sweep's manifest accounts for: its manifest,
        table, plot and the frames it planned (frames/NNNNN.tif, N < planned positions).
        Anything else in the directory, `frames/` included, stays."""
        try:
            old = json.loads((self.out_dir / MANIFEST).read_text(encoding="utf-8"))
            planned = len(old["positions_mm"])
        except (OSError, ValueError, KeyError, TypeError):
            planned = 0  # no readable manifest: it lists nothing, so no frame is removed
        for index in range(planned):
            (self.out_dir / self.frame_name(index)).unlink(missing_ok=True)
        for name in (MANIFEST, TABLE, PLOT):
            (self.out_dir / name).unlink(missing_ok=True)

    def _sync_table(self) -> None:
        assert self._csv is not None
        self._csv.flush()
        os.fsync(self._csv.fileno())

    def frame_name(self, index: int) -> str:
        return f"{FRAMES_DIR}/{index:05d}.tif"

    def write(self, frame: Frame, time_s: float, values: Mapping[str, float]) -> int:
        """Write the frame's TIFF and its CSV row, both fsynced; returns the row index."""
        if self._csv is None:
            raise RuntimeError("SweepWriter.write before open()")
        unknown = set(values) - set(self.value_columns)
        if unknown:
            raise ValueError(
                f"values for undeclared columns {sorted(unknown)}; declare them before the sweep"
            )
        index = self.rows_written
        name = self.frame_name(index)
        row: list[Any] = [index, frame.position_mm, time_s, name]
        row += [values.get(col, math.nan) for col in self.value_columns]
        text = [_fmt(v) for v in row]
        start = self._csv.tell()
        try:
            write_frame_tiff(self.out_dir / name, frame, index)
            csv.writer(self._csv).writerow(text)
        except BaseException:
            # a signal or a full disk between the frame and its row: whether the row went
            # into the table decides, so there is never a frame without a row or vice versa
            if self._csv.tell() > start:
                self.rows_written += 1
            else:
                with contextlib.suppress(OSError):
                    (self.out_dir / name).unlink(missing_ok=True)
            raise
        self.rows_written += 1
        self._sync_table()
        return index

    def finish(self, status: str, reason: str | None = None) -> None:
        """Close the table and mark the manifest "complete" or "partial" (with the reason)."""
        if status not in ("complete", "partial"):
            raise ValueError(f"status must be 'complete' or 'partial', got {status!r}")
        if self._csv is not None:
            with contextlib.suppress(OSError, ValueError):
                self._sync_table()
            self._csv.close()
            self._csv = None
        self.manifest.update(status=status, reason=reason, finished=_now(), rows=self.rows_written)
        write_json_atomic(self.manifest_path, self.manifest)


def writer_alive(manifest: Mapping[str, Any]) -> bool:
    """Whether the process that opened a "running" manifest still runs on this host."""
    writer = manifest.get("writer") or {}
    pid, host = writer.get("pid"), writer.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(manifest: Mapping[str, Any], rows: int) -> str:
    """Why a manifest still says "running": being written now, or its writer was killed."""
    writer = manifest.get("writer") or {}
    if writer_alive(manifest):
        return f"still being recorded by process {writer.get('pid')} ({rows} frames so far)"
    who = f"process {writer['pid']}" if "pid" in writer else "the recording process"
    return (
        f"interrupted: {who} ended without closing the sweep (killed, or the machine "
        f"stopped) after {rows} of {len(manifest.get('positions_mm', []))} frames"
    )


def _roi_dict(roi: Roi) -> dict[str, int]:
    return {"x": roi.x, "y": roi.y, "w": roi.w, "h": roi.h}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class SweepRecord:
    """A sweep read back from disk: manifest, numeric columns and frame paths."""

    directory: Path
    manifest: dict[str, Any]
    columns: tuple[str, ...]
    data: dict[str, NDArray[np.float64]]
    frame_paths: tuple[Path, ...]

    @property
    def status(self) -> str:
        """'complete' or 'partial' (a manifest left 'running' reads as partial)."""
        return "complete" if self.manifest["status"] == "complete" else "partial"

    @property
    def reason(self) -> str | None:
        if self.manifest["status"] == "running":
            return stale_reason(self.manifest, len(self))
        reason = self.manifest.get("reason")
        return None if reason is None else str(reason)

    @property
    def rois(self) -> dict[str, Roi]:
        return {name: Roi(**r) for name, r in self.manifest["rois"].items()}

    @property
    def planned_positions_mm(self) -> NDArray[np.float64]:
        return np.asarray(self.manifest["positions_mm"], dtype=np.float64)

    @property
    def positions_mm(self) -> NDArray[np.float64]:
        """Stage positions reported at each recorded frame."""
        return self.data["position_mm"]

    @property
    def time_s(self) -> NDArray[np.float64]:
        return self.data["time_s"]

    def __len__(self) -> int:
        return len(self.frame_paths)

    def config(self) -> InstrumentConfig:
        """The instrument configuration the sweep ran with."""
        return InstrumentConfig.model_validate(self.manifest["config"])

    def has(self, column: str) -> bool:
        return column in self.data

    def column(self, name: str) -> NDArray[np.float64]:
        if name not in self.data:
            raise KeyError(f"{self.directory / TABLE} has no column {name!r}")
        return self.data[name]

    def roi_values(self, roi_name: str, quantity: str) -> NDArray[np.float64]:
        """One per-ROI column, e.g. roi_values("A", "lap_var")."""
        return self.column(roi_column(roi_name, quantity))

    def quantities(self, roi_name: str) -> list[str]:
        """Per-ROI quantities recorded for an ROI, in column order."""
        prefix = f"{roi_name}_"
        return [c[len(prefix) :] for c in self.columns if c.startswith(prefix)]

    def read_frame(self, index: int) -> Frame:
        return read_frame(self.frame_paths[index])


_REQUIRED_KEYS = ("format", "version", "status", "columns", "rois", "positions_mm", "config")


def _load_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise RecordError(f"{directory}: no such sweep directory; record one with a sweep first")
    if not path.is_file():
        raise RecordError(f"{path}: missing; {directory} is not a sweep directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not a readable JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RecordError(f"{path}: not an hdme-focus sweep manifest (format != {FORMAT!r})")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise RecordError(f"{path}: manifest lacks {', '.join(missing)}")
    if int(manifest["version"]) > FORMAT_VERSION:
        raise RecordError(
            f"{path}: format version {manifest['version']} is newer than this "
            f"hdme-focus reads ({FORMAT_VERSION}); upgrade hdme-focus"
        )
    if manifest["status"] not in ("running", "complete", "partial"):
        raise RecordError(f"{path}: unknown status {manifest['status']!r}")
    return manifest


def load_sweep(directory: Path | str, check_frames: bool = True) -> SweepRecord:
    """Read and validate a sweep directory; RecordError naming the file and the problem.

    A torn last CSV line (the process died mid-write) is dropped when the
    manifest does not say "complete"; any other malformed row is an error.
    """
    directory = Path(directory)
    manifest = _load_manifest(directory)
    columns = tuple(str(c) for c in manifest["columns"])
    table = directory / TABLE
    if not table.is_file():
        raise RecordError(f"{table}: missing; the sweep wrote no table")
    try:
        text = table.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{table}: cannot read ({exc})") from exc
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n") and manifest["status"] != "complete":
        lines = lines[:-1]  # torn final write
    rows = list(csv.reader(lines))
    if not rows or tuple(rows[0]) != columns:
        raise RecordError(f"{table}: header does not match the columns in {MANIFEST}")
    body = rows[1:]
    frame_col = columns.index("frame")
    data_cols = [c for c in columns if c != "frame"]
    values: dict[str, list[float]] = {c: [] for c in data_cols}
    frames: list[Path] = []
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(columns):
            raise RecordError(
                f"{table}:{lineno}: {len(row)} fields, expected {len(columns)}; the file is damaged"
            )
        for col, cell in zip(columns, row, strict=True):
            if col == "frame":
                continue
            try:
                values[col].append(float(cell))
            except ValueError:
                raise RecordError(
                    f"{table}:{lineno}: column {col} = {cell!r} is not a number"
                ) from None
        frame_path = directory / row[frame_col]
        if check_frames and not frame_path.is_file():
            raise RecordError(f"{frame_path}: frame listed in {TABLE} line {lineno} is missing")
        frames.append(frame_path)
    if manifest["status"] == "complete" and len(body) != int(manifest.get("rows", len(body))):
        raise RecordError(
            f"{table}: {len(body)} rows but {MANIFEST} says {manifest['rows']}; the file is damaged"
        )
    data = {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}
    return SweepRecord(directory, manifest, columns, data, tuple(frames))
