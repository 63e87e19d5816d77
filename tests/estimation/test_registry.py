"""Estimators by name, and the one interface every one of them implements in full."""

from __future__ import annotations

import numpy as np
import pytest

from hdme_focus import render
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import to_gray_float
from hdme_focus.estimation import (
    DEFAULT_ESTIMATOR,
    DefocusEstimate,
    DefocusEstimator,
    create_estimator,
    estimator_names,
    load_estimator,
)
from hdme_focus.estimation.weights import shipped_weights_path

AGREED_NAMES = [
    "hdme-lite",
    "hdme-tiny",
    "hdme-lite-conf",
    "hdme-w48",
    "reblur",
    "focus-measure",
    "patch-classifier",
]
SHIPPED = [
    n for n in AGREED_NAMES if n in ("reblur", "focus-measure") or shipped_weights_path(n).is_file()
]


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 + 0.6 * rng.random((h, w))).astype(np.float32)


def test_every_agreed_name_is_registered_and_the_default_is_hdme_lite() -> None:
    assert estimator_names() == AGREED_NAMES
    assert DEFAULT_ESTIMATOR == "hdme-lite"


def test_unknown_names_and_devices_are_one_line_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown estimator 'sobel'; choose one of hdme-lite"):
        create_estimator("sobel")
    with pytest.raises(
        UsageError, match="unknown device 'tpu'; choose one of cpu, cuda, mps, auto"
    ):
        create_estimator("reblur", device="tpu")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_estimator_implements_the_whole_interface(name: str) -> None:
    est = create_estimator(name)
    assert isinstance(est, DefocusEstimator)
    assert est.sigma_max_px > 0 and name.split("-")[0] in est.name
    rgb = np.repeat((_texture(45, 53)[..., None] * 255).astype(np.uint8), 3, axis=2)
    sig = est.predict(rgb)
    assert sig.shape == (45, 53) and sig.dtype == np.float32
    coarse = est.predict(rgb, downscale=2.0)
    assert coarse.shape == (45, 53) and np.isfinite(coarse).all()
    out = est.estimate(rgb, downscale=1.5)
    assert isinstance(out, DefocusEstimate)
    assert out.sigma_px.shape == out.confidence.shape == (45, 53)
    assert out.confidence.dtype == np.float32
    assert float(out.confidence.min()) >= 0.0 and float(out.confidence.max()) <= 1.0


def test_a_gray_float_frame_is_not_converted_again() -> None:
    """The caller's gray frame and the raw frame it came from give the same map."""
    est = create_estimator("focus-measure")
    rgb = (np.random.default_rng(3).random((40, 48, 3)) * 255).astype(np.uint8)
    gray = to_gray_float(rgb)
    np.testing.assert_array_equal(est.predict(rgb), est.predict(gray))


def test_baselines_get_the_coarse_range_by_downscaling() -> None:
    """At 2x downscale a blur beyond the full-size range reads larger than sigma_max."""
    est = create_estimator("focus-measure")
    tex = render.blur_uniform(_texture(160, 160, 1), 0.0)
    frame = render.blur_uniform(tex, 14.0)
    full = float(np.median(est.predict(frame)))
    coarse = float(np.median(est.predict(frame, downscale=3.0)))
    assert full <= est.sigma_max_px
    assert coarse > est.sigma_max_px


def test_texture_confidence_is_low_on_flat_and_saturated_pixels() -> None:
    est = create_estimator("reblur")
    frame = _texture(64, 64)
    frame[:, :32] = 0.5  # flat
    frame[:8, 40:] = 1.0  # clipped
    conf = est.estimate(frame).confidence
    assert float(conf[16:48, 4:20].max()) < 0.05
    assert float(conf[2:6, 44:60].max()) == 0.0
    assert float(np.median(conf[16:48, 44:60])) > 0.8


def test_load_estimator_takes_names_and_defaults() -> None:
    assert load_estimator("reblur").name == "reblur"
    if shipped_weights_path(DEFAULT_ESTIMATOR).is_file():
        assert load_estimator(None, device="cpu").name.startswith("hdme-net:hdme-lite@")
        assert load_estimator("hdme", device="cpu").name == load_estimator(None, "cpu").name
