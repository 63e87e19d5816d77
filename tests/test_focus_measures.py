"""Focus measures rank a blur series correctly, per ROI."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform

from hdme_focus.core.roi import Roi, RoiError
from hdme_focus.focus_measures import (
    DEFAULT_MEASURES,
    best_index,
    focus_measures,
    normalise_curve,
)
from hdme_focus.render import blur_uniform


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    img = transform.resize(data.camera().astype(np.float32) / 255.0, (96, 128), anti_aliasing=True)
    return img.astype(np.float32)


def test_every_measure_peaks_at_the_sharpest_frame_of_a_blur_series(texture: np.ndarray) -> None:
    sigmas = [3.0, 2.0, 1.0, 0.0, 1.5, 2.5, 4.0]  # sharpest at index 3, like a sweep through focus
    rng = np.random.default_rng(0)
    frames = [
        (blur_uniform(texture, s) if s > 0 else texture) + rng.normal(0, 0.002, texture.shape)
        for s in sigmas
    ]
    roi = Roi(16, 16, 64, 48)
    for name in DEFAULT_MEASURES:
        curve = [focus_measures(f.astype(np.float32), roi)[name] for f in frames]
        assert best_index(curve) == 3, (name, curve)
        # and the curve falls monotonically with blur on either side
        order = np.argsort(sigmas)
        assert np.all(np.diff(np.asarray(curve)[order]) < 0), (name, curve)


def test_measures_are_local_to_the_roi(texture: np.ndarray) -> None:
    image = texture.copy()
    image[:, 64:] = blur_uniform(texture, 4.0)[:, 64:]  # right half blurred
    left = focus_measures(image, Roi(4, 4, 56, 88))
    right = focus_measures(image, Roi(68, 4, 56, 88))
    for name in DEFAULT_MEASURES:
        assert left[name] > right[name], name


def test_flat_region_scores_zero() -> None:
    flat = np.full((40, 40), 0.5, dtype=np.float32)
    values = focus_measures(flat, Roi(5, 5, 20, 20))
    assert values == {"lap_var": 0.0, "tenengrad": 0.0, "norm_var": 0.0}


def test_roi_outside_the_image_and_unknown_measure_are_refused(texture: np.ndarray) -> None:
    with pytest.raises(RoiError):
        focus_measures(texture, Roi(100, 0, 64, 10))
    with pytest.raises(ValueError, match="unknown focus measure"):
        focus_measures(texture, None, measures=["sharpness"])


def test_normalise_curve_peaks_at_one() -> None:
    out = normalise_curve([1.0, 4.0, np.nan, 2.0])
    assert out[1] == 1.0 and out[0] == 0.25 and np.isnan(out[2])
    assert best_index([np.nan, np.nan]) == -1
