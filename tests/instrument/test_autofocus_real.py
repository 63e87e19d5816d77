"""Autofocus on real microscope frames replayed from ../shared/data/flake-defocus.

The nearly empty fields have nothing to focus on: autofocus must refuse them
instead of moving. Skipped when the data (or the shipped weights) are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hdme_focus.calibration.fit import fit_vcurve
from hdme_focus.calibration.model import SweepSource, build_calibration
from hdme_focus.config import CameraConfig, InstrumentConfig, ReplayStageConfig
from hdme_focus.core.roi import Roi
from hdme_focus.instrument.autofocus import HdmeOptions
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.hybrid import autofocus_hybrid
from hdme_focus.instrument.session import AutofocusRefused

FLAKE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "flake-defocus"
EMPTY_FIELDS = ("ix000_iy001", "ix000_iy002", "ix000_iy003")


def _replay_config(tmp: Path, tile: str) -> InstrumentConfig:
    """A replay bench of one field: positions.csv (mm) naming the shared frames in place."""
    from hdme_focus.estimation.real_sets import flake_labels

    rows = [(name, d / 1000.0) for name, t, d in flake_labels(FLAKE) if t == tile]
    folder = tmp / tile
    folder.mkdir()
    lines = ["file,position_mm", *(f"{FLAKE / n},{p}" for n, p in rows)]
    (folder / "positions.csv").write_text("\n".join(lines) + "\n")
    lo, hi = min(p for _, p in rows), max(p for _, p in rows)
    return InstrumentConfig(
        stage=ReplayStageConfig(replay_dir=folder, min_mm=lo, max_mm=hi, start_mm=0.0),
        camera=CameraConfig(driver="replay", width_px=1920, height_px=1200, bit_depth=8),
    )


@pytest.mark.skipif(not FLAKE.is_dir(), reason="flake-defocus data absent")
@pytest.mark.parametrize("tile", EMPTY_FIELDS)
def test_empty_microscope_fields_are_refused_not_focused(tmp_path: Path, tile: str) -> None:
    from hdme_focus.estimation import load_estimator
    from hdme_focus.estimation.real_sets import FLAKE_ROI
    from hdme_focus.estimation.weights import default_weights_path

    if not default_weights_path().is_file():
        pytest.skip("shipped weights not installed")
    est = load_estimator(None, device="cpu")
    # a V-curve like the flake field's (about 0.1 px/um): the refusal must not depend on it
    z = np.linspace(-0.045, 0.045, 11)
    fit = fit_vcurve(z, np.hypot(100.0 * z, 3.0))
    cfg = _replay_config(tmp_path, tile)
    cal = build_calibration(
        [("flake", FLAKE_ROI, fit)],
        lens=cfg.optics.lens(),
        sweep=SweepSource(path="synthetic", frames=len(z), range_mm=(-0.045, 0.045)),
        estimator=est.name,
        frame_size_px=None,
    )
    with open_instrument(cfg) as inst:
        start = inst.stage.position_mm()  # the recorded in-focus frame: the sharpest there is
        with pytest.raises(AutofocusRefused, match="texture") as err:
            autofocus_hybrid(inst, Roi(*FLAKE_ROI), est, cal, HdmeOptions(margin_px=16))
        assert inst.stage.position_mm() == start and inst.stage.moves == 0
        assert err.value.result is not None and err.value.result.captures == 1
