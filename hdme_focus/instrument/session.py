"""One autofocus run's record and clock: what every focusing method reports.

`AutofocusResult` is what `autofocus` prints and writes; `Session` counts the
captures and moves a method makes and keeps device time (the instrument clock,
around captures and moves) apart from compute time (wall time, around
estimation and decisions).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hdme_focus.core.atomic import json_safe
from hdme_focus.core.errors import RefusedError
from hdme_focus.core.frame import Frame
from hdme_focus.instrument.devices import Instrument


class AutofocusRefused(RefusedError):
    """Autofocus stopped without moving further; str() says why and what to do.

    `result` holds what was done up to that point (captures, position).
    """

    def __init__(self, message: str, result: AutofocusResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class AutofocusResult:
    method: str
    roi: str
    start_mm: float
    final_mm: float = math.nan
    target_mm: float = math.nan
    captures: int = 0
    moves: int = 0
    strategy: str | None = None
    direction: str | None = None  # how the direction was decided
    ambiguous: bool = False
    tries: int = 0
    predicted_sigma_px: float = math.nan  # blur expected at the target
    measured_sigma_px: float = math.nan  # first capture
    verified_sigma_px: float | None = None
    residual_mm: float | None = None  # |z - z0| from the verification capture
    in_focus: bool | None = None  # None: not verified
    dof_mm: float = math.nan
    device_time_s: float = 0.0
    compute_time_s: float = 0.0
    refused: str | None = None
    beyond_range: bool = False  # a reading above the calibrated blur range (extrapolated)
    prior: dict[str, Any] | None = None
    calibration_region: str | None = None  # the calibrated region whose V-curve was used
    calibration_note: str | None = None  # e.g. calibrate refused this region
    refine: dict[str, Any] | None = None  # hybrid: the focus-measure refinement (hybrid.py)
    chroma: dict[str, Any] | None = None  # direction "chroma": the cue, or why it abstained
    measurements: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(json_safe(dataclasses.asdict(self)))

    def summary_line(self) -> str:
        head = f"autofocus {self.method}"
        if self.strategy:
            head += f"/{self.strategy}"
        if self.refused:
            note = f" (note: {self.calibration_note})" if self.calibration_note else ""
            return f"{head} ROI {self.roi}: refused at {self.start_mm:.4f} mm: {self.refused}{note}"
        parts = [
            f"{head} ROI {self.roi}: {self.start_mm:.4f} -> {self.final_mm:.4f} mm",
            f"{self.captures} capture{'s' * (self.captures != 1)}",
            f"{self.moves} move{'s' * (self.moves != 1)}",
        ]
        if self.direction:
            parts.append(f"direction {self.direction}{' (ambiguous)' * self.ambiguous}")
        if self.chroma is not None and self.chroma.get("abstained"):
            parts.append(f"chroma abstained: {self.chroma['abstained']}")
        if math.isfinite(self.measured_sigma_px):
            note = " (beyond the calibrated range)" if self.beyond_range else ""
            parts.append(f"sigma {self.measured_sigma_px:.2f} px{note}")
        if self.verified_sigma_px is not None:
            state = "in focus" if self.in_focus else "NOT in focus"
            parts.append(f"verified {self.verified_sigma_px:.2f} px ({state})")
        parts.append(
            f"device {self.device_time_s * 1e3:.0f} ms, compute {self.compute_time_s * 1e3:.0f} ms"
        )
        if self.calibration_note:
            parts.append(f"note: {self.calibration_note}")
        return ", ".join(parts)


class Session:
    """Counts captures and moves and splits device time from compute time."""

    def __init__(self, instrument: Instrument, result: AutofocusResult) -> None:
        self.inst = instrument
        self.result = result
        self._moves0 = instrument.stage.moves

    def capture(self) -> Frame:
        t0 = self.inst.clock.monotonic()
        try:
            return self.inst.capture()
        finally:
            self.result.device_time_s += self.inst.clock.monotonic() - t0
            self.result.captures += 1

    def move(self, target_mm: float) -> float:
        """Guarded move (split into max-step moves if needed); returns the reported position."""
        t0 = self.inst.clock.monotonic()
        try:
            if abs(target_mm - self.inst.stage.position_mm()) <= 1e-12:
                return self.inst.stage.position_mm()
            return self.inst.stage.travel_to(target_mm)
        finally:
            self.result.device_time_s += self.inst.clock.monotonic() - t0
            self.result.moves = self.inst.stage.moves - self._moves0

    @contextmanager
    def compute(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.result.compute_time_s += time.perf_counter() - t0
