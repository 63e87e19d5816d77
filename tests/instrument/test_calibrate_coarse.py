"""The coarse (downscaled) curve is fitted whenever far starts will need it."""

from __future__ import annotations

import numpy as np

from hdme_focus.instrument.calibrate import needs_coarse_pass


def test_a_model_that_tops_out_below_its_ceiling_still_gets_the_coarse_pass() -> None:
    """hdme-lite's readings saturate near 8 of its 10 px; autofocus switches to the coarse
    curve from 7.6 px on. The old rule (a reading >= 0.9 x range) skipped the pass for
    such a sweep, and far starts on the slide scene were read off the flat top (0 of 6
    in focus in the 2026-12-01 benchmark, 6 of 6 the day before)."""
    compressed = {"r": np.array([6.0, 4.1, 1.2, 0.9, 3.3, 7.9, 8.0, np.nan])}
    assert needs_coarse_pass(compressed, sigma_max_px=10.0)
    near_focus_only = {"r": np.array([3.0, 1.5, 0.8, 1.6, 2.9])}
    assert not needs_coarse_pass(near_focus_only, sigma_max_px=10.0)
