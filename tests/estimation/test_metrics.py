"""Defocus metrics on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from hdme_focus.estimation.metrics import (
    METRIC_NAMES,
    RELATIVE_FLOOR_PX,
    defocus_metrics,
    metrics_by_bin,
)

TRUE = np.array([[1.0, 2.0], [4.0, 8.0]], dtype=np.float32)


def test_perfect_prediction_has_zero_error_and_full_delta() -> None:
    m = defocus_metrics(TRUE, TRUE)
    for k in ("mse_norm", "mae_norm", "mae_px", "abs_rel", "sq_rel", "rmse", "rmse_log"):
        assert m[k] == 0.0
    assert m["delta1"] == m["delta2"] == m["delta3"] == 1.0
    assert m["n_pixels"] == 4


def test_known_scaling_gives_known_errors() -> None:
    pred = 1.1 * TRUE  # +10 % everywhere
    m = defocus_metrics(pred, TRUE, sigma_max_px=10.0)
    assert m["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert m["rmse_log"] == pytest.approx(np.log(1.1), rel=1e-5)
    assert m["mae_px"] == pytest.approx(0.1 * TRUE.mean(), rel=1e-5)
    assert m["mae_norm"] == pytest.approx(m["mae_px"] / 10.0)
    assert m["mse_norm"] == pytest.approx(np.mean((0.1 * TRUE / 10.0) ** 2), rel=1e-5)
    assert m["sq_rel"] == pytest.approx(np.mean(0.01 * TRUE), rel=1e-5)
    assert m["delta1"] == 1.0
    off = defocus_metrics(1.3 * TRUE, TRUE)  # 1.3 > 1.25 but < 1.25^2
    assert (off["delta1"], off["delta2"]) == (0.0, 1.0)


def test_in_focus_pixels_use_the_floor_not_infinity() -> None:
    m = defocus_metrics(np.array([0.2, 1.0]), np.array([0.0, 0.0]))
    assert np.isfinite(m["abs_rel"])
    assert m["abs_rel"] == pytest.approx((0 + (1.0 - RELATIVE_FLOOR_PX) / RELATIVE_FLOOR_PX) / 2)


def test_mask_and_non_finite_pixels_are_left_out() -> None:
    pred = TRUE.copy()
    pred[0, 0] = np.nan
    pred[1, 1] = 100.0
    mask = np.array([[True, True], [True, False]])
    m = defocus_metrics(pred, TRUE, mask=mask)
    assert m["n_pixels"] == 2 and m["mae_px"] == 0.0
    empty = defocus_metrics(pred, TRUE, mask=np.zeros((2, 2), bool))
    assert empty["n_pixels"] == 0
    assert all(np.isnan(empty[k]) for k in METRIC_NAMES)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        defocus_metrics(TRUE, TRUE[:1])


def test_bins_split_by_true_sigma_and_include_the_top_edge() -> None:
    true = np.array([0.5, 1.5, 3.0, 10.0])
    pred = true + np.array([0.0, 1.0, 0.0, -2.0])
    rows = metrics_by_bin(pred, true, bins_px=(0, 1, 2, 10))
    assert [r["bin_lo_px"] for r in rows] == [0, 1, 2]
    assert [r["n_pixels"] for r in rows] == [1, 1, 2]
    assert [r["mae_px"] for r in rows] == [0.0, 1.0, 1.0]
