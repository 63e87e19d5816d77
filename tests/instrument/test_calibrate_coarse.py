"""The coarse (downscaled) curve is fitted whenever far starts will need it, and kept only
where it agrees with the fine one on where focus is."""

from __future__ import annotations

import numpy as np
import pytest

from hdme_focus.calibration.fit import fit_vcurve, vcurve_sigma_px
from hdme_focus.instrument.calibrate import _fit_coarse, needs_coarse_pass


def test_a_model_that_tops_out_below_its_ceiling_still_gets_the_coarse_pass() -> None:
    """hdme-lite's readings saturate near 8 of its 10 px; autofocus switches to the coarse
    curve from 7.6 px on. The old rule (a reading >= 0.9 x range) skipped the pass for
    such a sweep, and far starts on the slide scene were read off the flat top (0 of 6
    in focus in the 2026-12-01 benchmark, 6 of 6 the day before)."""
    compressed = {"r": np.array([6.0, 4.1, 1.2, 0.9, 3.3, 7.9, 8.0, np.nan])}
    assert needs_coarse_pass(compressed, sigma_max_px=10.0)
    near_focus_only = {"r": np.array([3.0, 1.5, 0.8, 1.6, 2.9])}
    assert not needs_coarse_pass(near_focus_only, sigma_max_px=10.0)


def test_a_coarse_curve_that_puts_focus_elsewhere_is_dropped() -> None:
    """The region's focus does not move with the frame's scale. hdme-lite-conf read the
    letters scene's M region 12-14 px in focus at half size, its coarse V put focus 2.8
    DOF away, and far starts read through it were sent there."""
    z = np.arange(0.3, 2.71, 0.05)
    fine = fit_vcurve(z, vcurve_sigma_px(z, 1.26, 7.5, 0.9), max_sigma_px=9.0)
    agreeing = vcurve_sigma_px(z, 1.28, 9.0, 2.5)  # a vertex 0.15 DOF off: the usual
    elsewhere = vcurve_sigma_px(z, 1.63, 18.0, 2.6)
    coarse = _fit_coarse(z, {"M": agreeing, "N": elsewhere}, 10.0, 2.0, {"M": fine, "N": fine})
    assert set(coarse) == {"M"}
    assert coarse["M"].z0_mm == pytest.approx(1.28, abs=0.01)
