"""The focus prior: the last focus of an overlapping region, else the calibration's z0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdme_focus.calibration.model import RoiCalibration
from hdme_focus.core.roi import Roi
from hdme_focus.instrument.prior import choose_prior, load_state, save_focus, state_path

CAL = RoiCalibration(
    name="A",
    roi=(0, 0, 40, 40),
    z0_mm=1.5,
    k_px_per_mm=10.0,
    sigma0_px=0.8,
    dof_mm=0.1,
    z0_stderr_mm=0.02,
    rmse_px=0.1,
    r2=0.99,
    n_points=30,
    n_outliers=0,
    range_mm=(0.5, 2.5),
)


def test_an_overlapping_last_focus_beats_the_calibration(tmp_path: Path) -> None:
    path = state_path(tmp_path)
    save_focus(path, Roi(0, 0, 40, 40), 1.31)
    prior = choose_prior(Roi(10, 0, 40, 40), CAL, load_state(path))  # 75 % covered
    assert (prior.source, prior.position_mm) == ("last-focus", pytest.approx(1.31))
    assert prior.uncertainty_mm == pytest.approx(0.5 * CAL.dof_mm)


def test_a_region_covered_less_than_half_falls_back_to_z0(tmp_path: Path) -> None:
    path = state_path(tmp_path)
    save_focus(path, Roi(0, 0, 40, 40), 1.31)
    prior = choose_prior(Roi(30, 0, 40, 40), CAL, load_state(path))  # 25 % covered
    assert (prior.source, prior.position_mm) == ("calibration", pytest.approx(1.5))
    # three standard errors of z0 (0.06 mm) are more than half a DOF (0.05 mm)
    assert prior.uncertainty_mm == pytest.approx(0.06)
    assert choose_prior(Roi(30, 0, 40, 40), CAL, [], 0.2).uncertainty_mm == 0.2


def test_state_keeps_one_entry_per_region_and_the_newest(tmp_path: Path) -> None:
    path = state_path(tmp_path)
    save_focus(path, Roi(0, 0, 8, 8), 1.0)
    save_focus(path, Roi(0, 0, 8, 8), 1.2)
    for i in range(5):
        save_focus(path, Roi(10 + i, 0, 8, 8), float(i), keep=3)
    entries = load_state(path)
    assert [e["position_mm"] for e in entries] == [2.0, 3.0, 4.0]
    save_focus(None, Roi(0, 0, 8, 8), 9.0)  # no state file: nothing is written
    assert len(load_state(path)) == 3


@pytest.mark.parametrize("text", ["{not json", json.dumps({"format": "other"}), "[]"])
def test_an_unreadable_state_file_counts_as_empty(tmp_path: Path, text: str) -> None:
    path = state_path(tmp_path)
    path.write_text(text)
    assert load_state(path) == []
    save_focus(path, Roi(0, 0, 8, 8), 1.0)  # and is replaced by a valid one
    assert [e["position_mm"] for e in load_state(path)] == [1.0]
