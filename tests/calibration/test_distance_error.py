"""The 1-sigma error of a distance read from a blur, as the autofocus weighs its readings."""

from __future__ import annotations

import math

import pytest

from hdme_focus.calibration.model import SCALE_ERROR, distance_error_mm

K_PX_PER_MM, SIGMA0_PX = 8.0, 1.0


def _distance_mm(sigma_px: float) -> float:
    return math.sqrt(max(sigma_px**2 - SIGMA0_PX**2, 0.0)) / K_PX_PER_MM


def test_at_focus_the_error_is_finite_though_the_distance_is_zero() -> None:
    err = distance_error_mm(SIGMA0_PX, K_PX_PER_MM, SIGMA0_PX)
    assert math.isfinite(err) and 0.0 < err < 1.0 / K_PX_PER_MM  # under one DOF


def test_readings_next_to_focus_are_the_least_precise_relative_to_the_distance() -> None:
    rel = [distance_error_mm(s, K_PX_PER_MM, SIGMA0_PX) / _distance_mm(s) for s in (1.2, 2, 4, 8)]
    assert rel == sorted(rel, reverse=True) and rel[0] > 3 * rel[-1]


def test_far_from_focus_the_error_grows_in_proportion_to_the_distance() -> None:
    rel = [distance_error_mm(s, K_PX_PER_MM, SIGMA0_PX) / _distance_mm(s) for s in (40, 80)]
    assert rel[0] == pytest.approx(rel[1], rel=0.02)
    assert rel[0] > SCALE_ERROR  # the scale error, plus the estimator's own scatter


def test_a_steeper_v_curve_gives_proportionally_smaller_errors() -> None:
    flat = distance_error_mm(3.0, 4.0, SIGMA0_PX)
    steep = distance_error_mm(3.0, 16.0, SIGMA0_PX)
    assert steep == pytest.approx(flat / 4.0)


def test_a_compressed_reading_is_less_precise_the_nearer_it_is_to_the_saturation() -> None:
    """Near the saturation a small reading error is a large blur error; at it, any
    distance farther out reads the same."""
    c = 10.0
    plain = distance_error_mm(8.0, K_PX_PER_MM, SIGMA0_PX)
    errors = [distance_error_mm(s, K_PX_PER_MM, SIGMA0_PX, c) for s in (6.0, 8.0, 9.5)]
    assert errors == sorted(errors) and errors[1] > plain
    assert errors[2] > 3 * errors[0]
    assert math.isinf(distance_error_mm(c, K_PX_PER_MM, SIGMA0_PX, c))
