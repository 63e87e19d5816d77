"""Classical baselines: the shared API, and a constant blur recovered where each model holds.

Measured (median over the frame interior, 12-bit, full well 20 000 e-):
re-blur on a piecewise-constant "Mondrian" image, sigma 1-4 px: within 4 %;
focus measure on a shuffled texture, sigma 1-4 px: within 7 %. Each method
fails outside its model (re-blur reads shuffled texture 2-10x too sharp), which
is why the tolerances below are per method and per texture.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from numpy.typing import NDArray

from hdme_focus import render
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.estimation.baselines import (
    BASELINES,
    FocusMeasureEstimator,
    ReblurEstimator,
)
from hdme_focus.estimation.registry import create_estimator
from hdme_focus.estimation.synthesis import shuffle_pixels

F32 = NDArray[np.float32]


def mondrian(n: int = 128, seed: int = 0) -> F32:
    """Piecewise-constant rectangles: isolated step edges, the re-blur method's model."""
    rng = np.random.default_rng(seed)
    img = np.full((n, n), 0.5, np.float32)
    for _ in range(45):
        x0, y0 = rng.integers(0, n, 2)
        w, h = rng.integers(8, 40, 2)
        img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0.1, 0.9)
    return img


def shuffled(n: int = 128) -> F32:
    crop = skimage.data.camera()[100 : 100 + n, 100 : 100 + n].astype(np.float32) / 255
    return (shuffle_pixels(crop, np.random.default_rng(0)) * 0.6 + 0.2).astype(np.float32)


def camera_frame(base: F32, sigma_px: float) -> NDArray[np.uint16]:
    blurred = render.blur_uniform(base, sigma_px)
    noisy = render.sensor_noise(
        blurred, np.random.default_rng(1), full_well_e=20000, read_noise_e=2
    )
    return render.quantize(noisy, 12)  # type: ignore[return-value]


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_reblur_recovers_constant_blur_on_step_edges(sigma: float) -> None:
    pred = ReblurEstimator().predict(camera_frame(mondrian(), sigma), bit_depth=12)
    assert float(np.median(pred[16:-16, 16:-16])) == pytest.approx(sigma, rel=0.12)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_focus_measure_recovers_constant_blur_on_texture(sigma: float) -> None:
    pred = FocusMeasureEstimator().predict(camera_frame(shuffled(), sigma), bit_depth=12)
    assert float(np.median(pred[16:-16, 16:-16])) == pytest.approx(sigma, rel=0.15)


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_share_the_estimator_api(name: str) -> None:
    est = create_estimator(name)
    assert isinstance(est, DefocusEstimator) and est.name == name
    rgb = np.repeat((mondrian(67)[..., None] * 255).astype(np.uint8), 3, axis=2)[:, :61]
    out = est.predict(rgb)
    assert out.shape == (67, 61) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 10.0


def test_blur_ordering_is_monotone() -> None:
    """Sharper frames read sharper, for both methods on their own textures."""
    for est, base in ((ReblurEstimator(), mondrian()), (FocusMeasureEstimator(), shuffled())):
        medians = [float(np.median(est.predict(camera_frame(base, s), 12))) for s in (0.5, 2, 5)]
        assert medians == sorted(medians), (est.name, medians)


def test_flat_frame_reads_fully_blurred() -> None:
    flat = np.full((64, 64), 0.4, np.float32)
    assert float(ReblurEstimator().predict(flat).min()) == 10.0


def test_unknown_baseline_names_the_choices() -> None:
    with pytest.raises(ValueError, match="reblur, focus-measure"):
        create_estimator("sobel")
