"""Magnify and enhance change only what the map says they should: sharp stays sharp, blur blurs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hdme_focus.applications.enhance import enhance_in_focus
from hdme_focus.applications.focus_weight import in_focus_weight
from hdme_focus.applications.magnify import magnify_defocus
from hdme_focus.core.errors import UsageError
from hdme_focus.core.roi import Roi
from hdme_focus.focus_measures import focus_measures

FOCUS_ON_D = 4  # frame at 1.6 mm: "D" (1.63 mm) in focus, the background (1.0 mm) 5 px blurred


def _lap(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    gray = image if image.ndim == 2 else image.mean(axis=2)
    return focus_measures(gray.astype(np.float32), Roi(*box), ["lap_var"])["lap_var"]


@pytest.fixture(scope="module")
def frame_and_map(sim_sweep: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    cam = sim_sweep.camera
    position = float(sim_sweep.stack.positions_mm[FOCUS_ON_D])
    return sim_sweep.stack.images01[FOCUS_ON_D], cam.true_sigma_px(position), cam.scene.regions


@pytest.mark.parametrize("colour", [False, True])
def test_magnify_keeps_focus_and_blurs_the_rest(frame_and_map: Any, colour: bool) -> None:
    image, sigma, regions = frame_and_map
    if colour:
        image = np.stack([image, 0.8 * image, 0.6 * image], axis=-1)
    out = magnify_defocus(image, sigma, strength=1.5)
    assert out.shape == image.shape
    assert _lap(out, regions["D"]) >= _lap(image, regions["D"])
    assert _lap(out, regions["background"]) <= 0.7 * _lap(image, regions["background"])
    still = magnify_defocus(image, sigma, strength=0.0, sharpen=0.0)
    np.testing.assert_allclose(still, image, atol=1e-5)


def test_magnify_does_not_bleed_the_foreground_into_the_background(frame_and_map: Any) -> None:
    """A bright in-focus square on a dark blurred field: its light must not spill outwards."""
    image = np.full((64, 64), 0.1, np.float32)
    image[24:40, 24:40] = 0.9
    sigma = np.full_like(image, 6.0)
    sigma[24:40, 24:40] = 0.0
    out = magnify_defocus(image, sigma, strength=2.0, sharpen=0.0)
    ring = np.zeros_like(image, bool)
    ring[20:44, 20:44] = True
    ring[24:40, 24:40] = False
    assert np.abs(out[ring] - 0.1).max() < 0.05


@pytest.mark.parametrize("colour", [False, True])
def test_enhance_sharpens_focus_only(frame_and_map: Any, colour: bool) -> None:
    image, sigma, regions = frame_and_map
    if colour:
        image = np.stack([image, image, 0.5 * image], axis=-1)
    out = enhance_in_focus(image, sigma, amount=1.0)
    assert _lap(out, regions["D"]) > 1.5 * _lap(image, regions["D"])
    assert _lap(out, regions["background"]) <= _lap(image, regions["background"]) * 1.001
    far = sigma > 4.0
    np.testing.assert_array_equal(out[far], image[far])  # blurred pixels (and noise) untouched


def test_in_focus_weight_is_a_smooth_step() -> None:
    w = in_focus_weight(np.array([0.0, 1.0, 1.75, 2.5, 9.0]), in_focus_px=1.0, transition_px=1.5)
    np.testing.assert_allclose(w, [1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_bad_options_give_one_clear_error(frame_and_map: Any) -> None:
    image, sigma, _ = frame_and_map
    with pytest.raises(UsageError, match="strength -1"):
        magnify_defocus(image, sigma, strength=-1)
    with pytest.raises(UsageError, match="does not match the image"):
        enhance_in_focus(image, sigma[:-1])
    with pytest.raises(UsageError, match="transition"):
        in_focus_weight(sigma, transition_px=0)


def test_default_in_focus_limit_follows_the_map() -> None:
    """An estimator that reads focus at 1.6 px still keeps that region: the limit adapts."""
    sigma = np.full((50, 50), 6.0, np.float32)
    sigma[:, :10] = 1.6  # the subject, 20 % of the frame
    w = in_focus_weight(sigma)
    assert np.all(w[:, :10] == 1.0) and np.all(w[:, 10:] == 0.0)
