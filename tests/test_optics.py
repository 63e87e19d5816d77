"""Thin-lens relations against hand-computed values (f = 50 mm, F/8, 5 um pitch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hdme_focus.optics import (
    ThinLens,
    coc_radius_mm,
    image_distance_mm,
    object_distance_mm,
    sigma_px_from_coc,
)


def test_coc_radius_hand_values_and_sign_on_either_side_of_focus() -> None:
    # u = 1000 mm focuses at v = 1000 * 50 / 950 = 52.63 mm.
    # s = 51 (sensor in front of the image plane): R = (50*51/16)(1/50 - 1/1000 - 1/51)
    #   = 159.375 * 0.019 - 3.125 = -0.096875 mm
    assert float(coc_radius_mm(50, 8, 51, 1000)) == pytest.approx(-0.096875, abs=1e-12)
    # s = 54 (behind it): (50*54/16)(0.019 - 1/54) = 168.75 * 0.019 - 3.125 = 0.08125 mm
    assert float(coc_radius_mm(50, 8, 54, 1000)) == pytest.approx(0.08125, abs=1e-12)
    # at v exactly: no blur
    assert float(coc_radius_mm(50, 8, 1000 * 50 / 950, 1000)) == pytest.approx(0.0, abs=1e-12)


def test_object_at_infinity() -> None:
    # u = inf: R = (f s / 2F)(1/f - 1/s) = 159.375 * (1/50 - 1/51) = 0.0625 mm
    assert float(coc_radius_mm(50, 8, 51, math.inf)) == pytest.approx(0.0625, abs=1e-12)
    assert float(image_distance_mm(50, math.inf)) == pytest.approx(50.0)
    assert math.isinf(float(object_distance_mm(50, 50.0)))
    lens = ThinLens(50, 8, 5, 51)
    assert float(lens.focus_position_mm(math.inf)) == pytest.approx(-1.0)


def test_sigma_is_abs_r_over_sqrt2_in_pixels() -> None:
    # 0.096875 mm / sqrt(2) / 0.005 mm = 13.70 px, unsigned
    expected = 0.096875 / math.sqrt(2) / 0.005
    assert float(sigma_px_from_coc(-0.096875, 5.0)) == pytest.approx(expected)
    assert float(ThinLens(50, 8, 5, 51).sigma_px(0.0, 1000.0)) == pytest.approx(expected)


@pytest.mark.parametrize("setup", ["image", "object"])
@pytest.mark.parametrize("u_mm", [120.0, 1000.0, 5000.0])
def test_focus_position_round_trip(setup: str, u_mm: float) -> None:
    s0 = 51.0 if setup == "image" else 100.0
    lens = ThinLens(50, 8, 5, s0, setup)  # type: ignore[arg-type]
    z = float(lens.focus_position_mm(u_mm))
    assert float(lens.sigma_px(z, u_mm)) == pytest.approx(0.0, abs=1e-6)
    assert float(lens.sigma_px(z + 0.05, u_mm)) > 0.01
    assert float(object_distance_mm(50, image_distance_mm(50, u_mm))) == pytest.approx(u_mm)


def test_default_bench_numbers() -> None:
    lens = ThinLens(50, 8, 5, 51)
    # v(1000) = 52.6316 mm -> z = 1.6316 mm; k = D / (2 sqrt2 p v) = 6.25 / (0.014142 * 52.6316)
    assert float(lens.focus_position_mm(1000.0)) == pytest.approx(50000 / 950 - 51)
    assert lens.slope_px_per_mm(1000.0) == pytest.approx(
        6.25 / (2 * math.sqrt(2) * 0.005 * 52.63158), rel=1e-5
    )
    assert lens.depth_of_focus_mm(1000.0, 0.5) == pytest.approx(0.5 / lens.slope_px_per_mm(1000.0))


@pytest.mark.parametrize(("setup", "s0"), [("image", 51.0), ("object", 100.0)])
@pytest.mark.parametrize("u_mm", [300.0, 1000.0])
def test_slope_matches_finite_difference(setup: str, s0: float, u_mm: float) -> None:
    lens = ThinLens(50, 8, 5, s0, setup)  # type: ignore[arg-type]
    if setup == "object":
        u_mm = u_mm / 10  # near the 100 mm working distance
    z0 = float(lens.focus_position_mm(u_mm))
    h = 1e-4
    # |R| is a V: average the two one-sided slopes at focus
    fd = (float(lens.sigma_px(z0 + h, u_mm)) + float(lens.sigma_px(z0 - h, u_mm))) / (2 * h)
    assert lens.slope_px_per_mm(u_mm) == pytest.approx(fd, rel=1e-3)


def test_sigma_grows_on_both_sides_of_focus() -> None:
    lens = ThinLens(50, 8, 5, 51)
    z0 = float(lens.focus_position_mm(1000.0))
    zs = z0 + np.array([-0.4, -0.2, 0.0, 0.2, 0.4])
    sig = np.array([float(lens.sigma_px(float(z), 1000.0)) for z in zs])
    assert sig[2] == pytest.approx(0.0, abs=1e-9)
    assert sig[0] > sig[1] > sig[2] < sig[3] < sig[4]
    # and R changes sign across focus
    assert float(lens.coc_mm(z0 - 0.2, 1000.0)) < 0 < float(lens.coc_mm(z0 + 0.2, 1000.0))


def test_channel_lenses_focus_red_behind_blue() -> None:
    # axial colour: f_red > f_blue, so on the image side red focuses at a larger stage position
    lens = ThinLens(50, 8, 5, 51, axial_chromatic_mm=0.25)
    red, green, blue = lens.channel_lenses()
    z = [float(c.focus_position_mm(1000.0)) for c in (red, green, blue)]
    assert z[0] > z[1] > z[2]
    assert z[1] == pytest.approx(float(ThinLens(50, 8, 5, 51).focus_position_mm(1000.0)))
    assert red.focal_length_mm - blue.focal_length_mm == pytest.approx(0.25)
    assert not red.chromatic and lens.chromatic


def test_corrected_lens_channels_are_the_lens() -> None:
    lens = ThinLens(50, 8, 5, 51)
    assert not lens.chromatic
    assert lens.channel_lenses() == (lens, lens, lens)
