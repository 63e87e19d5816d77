"""The chroma direction: which side of focus, from the colour of one frame.

`estimation.chroma.chroma_cue` says whether red or blue is the sharper channel
of a region. Which of those means "the stage is above focus" depends on the
lens (f_red > f_blue or the reverse) and on what the stage moves, so it is
read from the recorded sweep the calibration came from: at every frame a few
depths of focus from each region's calibrated z0, the cue's sign is compared
with the side of focus. The result, `ChromaConvention`, is kept beside the
calibration file (`<calibration>.chroma.json`, written atomically) and made
again when the calibration changes.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from hdme_focus.calibration.model import Calibration
from hdme_focus.core.atomic import write_json_atomic
from hdme_focus.estimation.chroma import ChromaCue, ChromaThresholds, chroma_cue
from hdme_focus.records import SweepRecord, load_sweep

FORMAT = "hdme-focus-chroma-convention"
MIN_OFFSET_DOF = 2.0  # sweep frames nearer their region's focus than this do not vote
MIN_AGREEMENT = 0.9  # share of votes that must agree for the sign to be trusted
MIN_VOTES = 3


@dataclass(frozen=True)
class ChromaConvention:
    """Which channel is sharper above focus, as the sweep showed, and how surely."""

    red_sharper_above: bool | None  # None: the sweep gave no trustworthy sign
    votes: int  # sweep readings where the cue spoke, a few DOF from focus
    agreement: float  # share of those votes with the majority sign
    readings: int  # sweep readings a few DOF from focus (spoken or not)
    calibration_created: str  # the calibration this was read for
    reason: str | None = None  # why red_sharper_above is None

    def side(self, cue: ChromaCue) -> int:
        """+1 when focus lies above the current position, -1 below, 0 when unknown."""
        if self.red_sharper_above is None or not cue.speaks:
            return 0
        above_now = cue.red_sharper == self.red_sharper_above  # the stage is above focus
        return -1 if above_now else 1


def calibrate_chroma(
    record: SweepRecord,
    calibration: Calibration,
    thresholds: ChromaThresholds | None = None,
) -> ChromaConvention:
    """Read the sign convention from a recorded sweep's frames and calibrated regions."""
    positions = record.positions_mm
    votes: list[int] = []
    readings = 0
    for index, z in enumerate(positions):
        regions = [
            r
            for r in calibration.rois
            if r.roi is not None and abs(float(z) - r.z0_mm) >= MIN_OFFSET_DOF * r.dof_mm
        ]
        if not regions:
            continue
        image = record.read_frame(index).image
        for region in regions:
            assert region.roi is not None
            readings += 1
            cue = chroma_cue(image, region.roi, thresholds)
            if cue.speaks:
                above = float(z) > region.z0_mm
                votes.append(1 if cue.red_sharper == above else -1)
    created = calibration.created
    if len(votes) < MIN_VOTES:
        weak = (
            f"the chroma cue spoke on {len(votes)} of {readings} sweep readings a few DOF from "
            "focus: the lens shows no usable axial colour (or the frames are gray/compressed)"
        )
        return ChromaConvention(None, len(votes), math.nan, readings, created, weak)
    red_above = sum(votes) > 0
    agreement = sum(1 for v in votes if (v > 0) == red_above) / len(votes)
    why: str | None = None
    if agreement < MIN_AGREEMENT:
        why = (
            f"the chroma cue's sign agreed with the side of focus on only {agreement:.0%} of "
            f"{len(votes)} sweep readings (needs {MIN_AGREEMENT:.0%})"
        )
    return ChromaConvention(
        red_above if why is None else None, len(votes), agreement, readings, created, why
    )


def convention_path(calibration_path: Path | str) -> Path:
    """Where the convention of a calibration file is kept."""
    p = Path(calibration_path)
    return p.with_name(p.stem + ".chroma.json")


def load_or_calibrate_chroma(
    calibration_path: Path | str, calibration: Calibration
) -> ChromaConvention:
    """The kept convention of this calibration, else read it from its sweep and keep it.

    With the sweep gone, the convention says so and the cue abstains (the
    direction falls back to prior/probe); nothing is written. Reading the sweep
    takes a few seconds, once per calibration.
    """
    path = convention_path(calibration_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") == FORMAT:
            kept = ChromaConvention(**data["convention"])
            if kept.calibration_created == calibration.created:
                return kept
    except (OSError, ValueError, TypeError, KeyError):
        pass  # absent, unreadable or from another version: read it again
    sweep_dir = Path(calibration.sweep.path)
    try:
        record = load_sweep(sweep_dir)
    except Exception as exc:  # a moved or deleted sweep: no convention, not a failure
        why = f"the calibration's sweep {sweep_dir} cannot be read ({exc}); recalibrate"
        return ChromaConvention(None, 0, math.nan, 0, calibration.created, why)
    convention = calibrate_chroma(record, calibration)
    with contextlib.suppress(OSError):  # a read-only folder: read the sweep again next time
        write_json_atomic(path, {"format": FORMAT, "version": 1, "convention": asdict(convention)})
    return convention
