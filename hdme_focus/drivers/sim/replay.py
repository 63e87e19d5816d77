"""A stage and camera that replay a recorded focus sweep.

Record once on real hardware, then calibrate, try autofocus strategies and
compute depth offline: moving the replay stage selects the recorded frame
nearest to the target, and the camera returns it. Two sources are read:

- a sweep directory written by `hdme-focus sweep`, read through
  `hdme_focus.records` (the one reader of the sweep format, a layer below the
  drivers);
- any folder of images with a `positions.csv` of `file,position_mm` rows (file
  names relative to the folder or absolute).

Time is simulated (moves take distance / speed, captures their exposure), so
replayed procedures report device time comparable to the simulator's.
"""

from __future__ import annotations

import csv
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hdme_focus.config import ConfigError, InstrumentConfig, ReplayStageConfig
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import Frame
from hdme_focus.drivers.base import Clock, MotionRefused
from hdme_focus.drivers.sim.sim import SimClock
from hdme_focus.records import MANIFEST, RecordError, load_sweep, read_image

POSITIONS_CSV = "positions.csv"
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


class ReplayError(UsageError):
    """A recording that cannot be replayed; str() names the file and the fix."""


@dataclass(frozen=True)
class Recording:
    """Frames and the stage positions they were taken at, sorted by position."""

    source: Path
    positions_mm: NDArray[np.float64]
    files: tuple[Path, ...]
    bit_depth: int | None = None  # None: from the file's dtype
    exposure_ms: float = 10.0
    rois: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def range_mm(self) -> tuple[float, float]:
        return float(self.positions_mm[0]), float(self.positions_mm[-1])

    @property
    def step_mm(self) -> float:
        """Median spacing between recorded positions (inf for a single frame)."""
        if len(self.positions_mm) < 2:
            return math.inf
        return float(np.median(np.diff(self.positions_mm)))

    def nearest(self, position_mm: float) -> int:
        return int(np.argmin(np.abs(self.positions_mm - position_mm)))


def recording_from_files(
    files: Sequence[Path | str],
    positions_mm: Sequence[float],
    *,
    source: Path | str | None = None,
    bit_depth: int | None = None,
    exposure_ms: float = 10.0,
    rois: dict[str, tuple[int, int, int, int]] | None = None,
) -> Recording:
    """A recording from explicit files and positions (checked: same length, files exist)."""
    paths = [Path(f) for f in files]
    pos = np.asarray(positions_mm, dtype=np.float64)
    if len(paths) == 0:
        raise ReplayError(f"{source or 'recording'}: no frames to replay")
    if len(paths) != len(pos):
        raise ReplayError(f"{len(paths)} files but {len(pos)} positions")
    if not np.all(np.isfinite(pos)):
        raise ReplayError(f"{source or 'recording'}: positions must be finite numbers")
    for p in paths:
        if not p.is_file():
            raise ReplayError(f"{p}: frame file is missing; re-copy the recording")
    order = np.argsort(pos, kind="stable")
    if len(np.unique(pos)) != len(pos):
        raise ReplayError(f"{source or 'recording'}: two frames share one position")
    return Recording(
        source=Path(source) if source is not None else paths[0].parent,
        positions_mm=pos[order],
        files=tuple(paths[i] for i in order),
        bit_depth=bit_depth,
        exposure_ms=exposure_ms,
        rois=dict(rois or {}),
    )


def _read_sweep_dir(directory: Path) -> Recording:
    """Positions, frame files, bit depth and ROIs of a recorded sweep (via records)."""
    try:
        record = load_sweep(directory, check_frames=False)
    except RecordError as exc:
        raise ReplayError(str(exc)) from None
    camera = record.manifest["config"].get("camera") or {}
    return recording_from_files(
        record.frame_paths,
        record.positions_mm.tolist(),
        source=directory,
        bit_depth=int(camera["bit_depth"]) if "bit_depth" in camera else None,
        exposure_ms=float(camera.get("exposure_ms", 10.0)),
        rois={name: roi.as_tuple() for name, roi in record.rois.items()},
    )


def _read_positions_csv(directory: Path) -> Recording:
    path = directory / POSITIONS_CSV
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if rows and rows[0] and not _is_number(rows[0][-1]):
        rows = rows[1:]  # header
    files: list[Path] = []
    positions: list[float] = []
    for lineno, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not _is_number(row[1]):
            raise ReplayError(
                f"{path}:{lineno}: expected 'file,position_mm' (e.g. img_001.png,0.25), got {row}"
            )
        f = Path(row[0].strip())
        files.append(f if f.is_absolute() else directory / f)
        positions.append(float(row[1]))
    return recording_from_files(files, positions, source=directory)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_recording(path: Path | str) -> Recording:
    """Read a sweep directory or a folder of images with positions.csv."""
    directory = Path(path)
    if not directory.is_dir():
        raise ReplayError(f"{directory}: no such directory; record a sweep there first")
    if (directory / MANIFEST).is_file():
        return _read_sweep_dir(directory)
    if (directory / POSITIONS_CSV).is_file():
        return _read_positions_csv(directory)
    raise ReplayError(
        f"{directory}: neither {MANIFEST} (a recorded sweep) nor {POSITIONS_CSV} "
        "(rows of file,position_mm) found; add a positions.csv beside the images"
    )


class ReplayStage:
    """A focus axis over a recording: any position inside the recorded range is reachable."""

    def __init__(
        self,
        recording: Recording,
        clock: Clock,
        speed_mm_s: float = 2.0,
        start_mm: float | None = None,
    ) -> None:
        self.recording = recording
        self.clock = clock
        self.speed_mm_s = float(speed_mm_s)
        lo, hi = recording.range_mm
        self._tolerance_mm = 0.5 * recording.step_mm if math.isfinite(recording.step_mm) else 0.0
        if start_mm is None or not lo <= start_mm <= hi:
            start_mm = float(recording.positions_mm[0])
        self._position_mm = float(start_mm)

    def position_mm(self) -> float:
        return self._position_mm

    def move_to(self, target_mm: float) -> None:
        lo, hi = self.recording.range_mm
        if not lo - self._tolerance_mm <= target_mm <= hi + self._tolerance_mm:
            raise MotionRefused(
                f"replay: no frame was recorded near {target_mm:.4f} mm (the recording covers "
                f"[{lo:.4f}, {hi:.4f}] mm); set stage.min_mm/max_mm inside it"
            )
        self.clock.sleep(abs(target_mm - self._position_mm) / self.speed_mm_s)
        self._position_mm = float(target_mm)

    def is_moving(self) -> bool:
        return False

    def wait(self, timeout_s: float) -> None:
        return None

    def stop(self) -> None:
        return None

    def close(self) -> None:
        return None


class ReplayCamera:
    """Returns the recorded frame nearest to the replay stage's position."""

    def __init__(
        self,
        recording: Recording,
        stage: ReplayStage,
        clock: Clock,
        exposure_ms: float | None = None,
        cache_frames: int = 8,
    ) -> None:
        self.recording = recording
        self.stage = stage
        self.clock = clock
        self.exposure_ms = recording.exposure_ms if exposure_ms is None else float(exposure_ms)
        self._cache: OrderedDict[int, tuple[NDArray[Any], int | None]] = OrderedDict()
        self._cache_frames = max(1, cache_frames)

    def _load(self, index: int) -> tuple[NDArray[Any], int | None]:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        item = read_image(self.recording.files[index])
        self._cache[index] = item
        if len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)
        return item

    def capture(self) -> Frame:
        index = self.recording.nearest(self.stage.position_mm())
        image, stored_depth = self._load(index)
        self.clock.sleep(self.exposure_ms * 1e-3)
        bit_depth = (
            stored_depth or self.recording.bit_depth or (8 if image.dtype == np.uint8 else 16)
        )
        return Frame(
            image=image.copy(),
            exposure_ms=self.exposure_ms,
            timestamp_s=self.clock.monotonic(),
            position_mm=float(self.recording.positions_mm[index]),
            bit_depth=int(bit_depth),
            meta={"replay_index": index, "replay_file": str(self.recording.files[index])},
        )

    def close(self) -> None:
        self._cache.clear()


def open_replay(config: InstrumentConfig) -> tuple[ReplayStage, ReplayCamera, SimClock]:
    """The replay bench named by `stage.replay_dir`; ConfigError if it cannot be read."""
    sc = config.stage
    if not isinstance(sc, ReplayStageConfig):
        raise ConfigError(f"stage.driver = {sc.driver!r}: open_replay needs the 'replay' stage")
    directory = sc.replay_dir
    if directory is None:
        raise ConfigError(
            "stage.driver = 'replay' needs stage.replay_dir: a sweep directory or a folder "
            "of images with positions.csv"
        )
    try:
        recording = load_recording(directory)
    except (ReplayError, OSError) as exc:
        raise ConfigError(f"stage.replay_dir: {exc}") from None
    clock = SimClock()
    stage = ReplayStage(recording, clock, sc.speed_mm_s, sc.start_mm)
    camera = ReplayCamera(recording, stage, clock)
    return stage, camera, clock
