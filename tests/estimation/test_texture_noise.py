"""Texture is contrast beyond the camera's noise (`base.frame_noise_std` and friends)."""

from __future__ import annotations

import numpy as np
import pytest

from hdme_focus.core.frame import F32, Frame
from hdme_focus.core.roi import Roi
from hdme_focus.estimation import eval_render as er
from hdme_focus.estimation.base import frame_noise_std, roi_sigma, texture_mask
from hdme_focus.estimation.registry import create_estimator
from hdme_focus.instrument.autofocus import estimate_roi


def _textured(
    sigma_px: float, span: float, noise: er.NoiseLevel, seed: int = 0
) -> tuple[F32, float, er.F64]:
    """(noisy frame, its true noise std, the noise-free frame)."""
    rng = np.random.default_rng(seed)
    src = er.voronoi_texture(200, rng)
    clean = er.composite(
        [0.4 + span * src], [er.EvalLayer(np.ones((200, 200)), sigma_px)], "gaussian"
    )
    return er._noise(clean, noise, rng), er.noise_std(clean, noise), clean


@pytest.mark.parametrize("noise", ["low", "mid", "high"])
def test_the_noise_of_a_textured_frame_is_read_from_its_quiet_parts(noise: er.NoiseLevel) -> None:
    for sigma in (0.0, 2.0):
        img, truth, _ = _textured(sigma, 0.6, noise)
        assert frame_noise_std(img) == pytest.approx(truth, rel=0.35), (sigma, truth)


def test_a_colour_frame_and_a_tiny_one_give_a_noise_estimate() -> None:
    img = _textured(2.0, 0.6, "mid")[0]
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    assert frame_noise_std(rgb) == pytest.approx(frame_noise_std(img), rel=1e-5)
    assert frame_noise_std(img[:2, :2]) == 0.0


def test_pure_noise_is_not_texture_and_faint_structure_above_it_is() -> None:
    rng = np.random.default_rng(1)
    for std in (0.004, 0.015, 0.03):
        flat = np.clip(0.5 + rng.normal(0, std, (160, 200)), 0, 1).astype(np.float32)
        assert texture_mask(flat).mean() < 0.02, std
        assert np.isnan(roi_sigma(np.zeros_like(flat), flat).sigma_px), std  # refused
    img, _, clean = _textured(1.0, 0.2, "mid")
    truth = er.textured_truth(clean, "mid").mean()  # noise-free local contrast above the noise
    assert texture_mask(img).mean() == pytest.approx(truth, abs=0.1)
    assert texture_mask(img, noise_std=0.0).mean() > 0.99  # raw local std: noise counts


def test_an_roi_read_with_a_margin_judges_texture_against_the_whole_frames_noise() -> None:
    """A sharp, fine-grained region in a quiet frame: in a small crop its own texture is
    most of what the noise estimate sees, so a crop would call it noise and refuse it."""
    rng = np.random.default_rng(4)
    gray = np.clip(0.5 + rng.normal(0, 0.004, (240, 320)), 0, 1)
    gray[90:150, 130:190] += rng.uniform(-0.08, 0.08, (60, 60))  # in focus, pixel-fine
    frame = Frame(np.round(gray * 255).astype(np.uint8), exposure_ms=1.0, timestamp_s=0.0)
    roi, est = Roi(130, 90, 60, 60), create_estimator("reblur", "cpu")
    whole = estimate_roi(frame, roi, est)
    cropped = estimate_roi(frame, roi, est, margin_px=0)
    assert whole.textured_fraction > 0.9
    assert cropped.textured_fraction == pytest.approx(whole.textured_fraction, abs=0.05)
