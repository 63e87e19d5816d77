"""One autofocus call, checked and run the same way from the command line and the server.

`autofocus` (cli/focus_cmd.py) and the kept-loaded `serve` (instrument/server.py)
take the same choices; each names them in its own spelling (`--max-tries` on the
command line, `max_tries` in a request), so the checks take a spelling table and
every message names the option as the user wrote it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hdme_focus.calibration.model import Calibration
from hdme_focus.core.errors import UsageError
from hdme_focus.core.roi import Roi
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.instrument.autofocus import STRATEGIES, HdmeOptions
from hdme_focus.instrument.devices import Instrument
from hdme_focus.instrument.session import AutofocusResult

FocusMethod = Literal["hdme", "brent", "sweep"]
NO_REFINE = "no_refine"  # the spelling of "refine off" (`--no-refine`, `refine: false`)


@dataclass(frozen=True)
class FocusRequest:
    """What the user asked of one autofocus: method, side strategy and their limits."""

    method: FocusMethod = "hdme"
    direction: str = "auto"
    verify: bool = False
    refine: bool = True  # hdme: the hybrid (jump, then the focus-measure refinement)
    max_tries: int = 1
    global_calibration: bool = False
    prior_uncertainty_mm: float | None = None
    margin_px: int | None = None
    span_mm: float | None = None  # brent/sweep: window centred on the current position
    widen: bool = False

    def check(self, spell: Mapping[str, str]) -> None:
        """UsageError naming the first bad choice in the caller's spelling (`spell[field]`)."""

        def name(field: str) -> str:
            return spell.get(field, field)

        if self.direction not in STRATEGIES:
            raise UsageError(
                f"{name('direction')} {self.direction!r}: choose one of {', '.join(STRATEGIES)}"
            )
        if self.max_tries < 1:
            raise UsageError(f"{name('max_tries')} {self.max_tries}: must be at least 1")
        if self.max_tries > 1 and self.refine and self.method == "hdme":
            raise UsageError(
                f"{name('max_tries')} {self.max_tries}: the retries belong to the single jump; "
                f"pass {name(NO_REFINE)} (the default refinement already checks the landing "
                "with the focus measure)"
            )
        if self.margin_px is not None and self.margin_px < 0:
            raise UsageError(f"{name('margin_px')} {self.margin_px}: must be >= 0")
        for field in ("span_mm", "prior_uncertainty_mm"):
            v = getattr(self, field)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise UsageError(f"{name(field)} {v}: must be a positive distance in mm")


def run_focus(
    instrument: Instrument,
    region: Roi,
    request: FocusRequest,
    hdme: tuple[Calibration, DefocusEstimator] | None,
    state_file: Path | None,
    calibration_path: Path | None = None,
) -> AutofocusResult:
    """Focus `region` as `request` says; `hdme` (calibration, estimator) for method hdme.

    `calibration_path` is where `--direction chroma` keeps the sweep's colour
    convention beside the calibration (measured there on first use).
    """
    from hdme_focus.instrument.autofocus import autofocus_hdme
    from hdme_focus.instrument.hybrid import autofocus_hybrid
    from hdme_focus.instrument.search import SearchOptions, autofocus_brent, autofocus_sweep

    if request.method == "hdme":
        if hdme is None:
            raise ValueError("method hdme needs a calibration and an estimator")
        cal, est = hdme
        chroma = None
        if request.direction == "chroma":
            from hdme_focus.instrument.chroma_direction import load_or_calibrate_chroma

            if calibration_path is None:
                raise UsageError("direction chroma needs the calibration file's path")
            chroma = load_or_calibrate_chroma(calibration_path, cal)
        opts = HdmeOptions(
            strategy=request.direction,  # type: ignore[arg-type]  # checked against STRATEGIES
            verify=request.verify,
            max_tries=request.max_tries,
            prior_uncertainty_mm=request.prior_uncertainty_mm,
            state_file=state_file,
            margin_px=request.margin_px,
            global_calibration=request.global_calibration,
            chroma=chroma,
        )
        run_hdme = autofocus_hybrid if request.refine else autofocus_hdme
        return run_hdme(instrument, region, est, cal, opts)
    here = instrument.stage.position_mm()
    span = request.span_mm
    window = None if span is None else (here - span / 2, here + span / 2)
    search = SearchOptions(range_mm=window, widen=request.widen)
    run = autofocus_brent if request.method == "brent" else autofocus_sweep
    return run(instrument, region, search)
