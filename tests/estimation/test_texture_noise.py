"""Texture is contrast beyond the camera's noise (`noise.frame_noise` and its users)."""

from __future__ import annotations

import numpy as np
import pytest

from hdme_focus.core.frame import F32, Frame
from hdme_focus.core.roi import Roi
from hdme_focus.estimation import eval_render as er
from hdme_focus.estimation.base import roi_sigma, texture_mask
from hdme_focus.estimation.noise import NO_NOISE, frame_noise
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
        assert frame_noise(img).quiet_std == pytest.approx(truth, rel=0.35), (sigma, truth)


def test_a_colour_frame_and_a_tiny_one_give_a_noise_estimate() -> None:
    img = _textured(2.0, 0.6, "mid")[0]
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    assert frame_noise(rgb).quiet_std == pytest.approx(frame_noise(img).quiet_std, rel=1e-5)
    assert frame_noise(img[:2, :2]).quiet_std == 0.0


def test_pure_noise_is_not_texture_and_faint_structure_above_it_is() -> None:
    rng = np.random.default_rng(1)
    for std in (0.004, 0.015, 0.03):
        flat = np.clip(0.5 + rng.normal(0, std, (160, 200)), 0, 1).astype(np.float32)
        assert texture_mask(flat).mean() < 0.02, std
        assert np.isnan(roi_sigma(np.zeros_like(flat), flat).sigma_px), std  # refused
    img, _, clean = _textured(1.0, 0.2, "mid")
    truth = er.textured_truth(clean, "mid").mean()  # noise-free local contrast above the noise
    assert texture_mask(img).mean() == pytest.approx(truth, abs=0.1)
    assert texture_mask(img, noise=NO_NOISE).mean() > 0.99  # raw local std: noise counts


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


FULL_WELL_E, READ_E = 2000.0, 3.0  # a low-photon camera: shot noise dominates when bright


def _shot(clean: np.ndarray, rng: np.random.Generator) -> F32:
    e = rng.poisson(np.clip(clean, 0, 1) * FULL_WELL_E) + rng.normal(0, READ_E, clean.shape)
    return np.clip(e / FULL_WELL_E, 0, 1).astype(np.float32)


def _true_std(level: float) -> float:
    return float(np.sqrt(level * FULL_WELL_E + READ_E**2) / FULL_WELL_E)


def test_noise_grows_with_brightness_as_shot_noise_does() -> None:
    rng = np.random.default_rng(2)
    clean = np.full((256, 384), 0.03)
    for i, level in enumerate((0.2, 0.45, 0.8)):  # flat patches at three brightnesses
        clean[64:192, 32 + 120 * i : 112 + 120 * i] = level
    model = frame_noise(_shot(clean, rng))
    for level in (0.03, 0.2, 0.45, 0.8):
        assert float(model.std_at(level)) == pytest.approx(_true_std(level), rel=0.3), level


def test_bright_flat_regions_of_a_dark_frame_are_not_texture() -> None:
    """Fluorescence: a dark, quiet background and bright, flat, out-of-focus cell bodies.
    One noise number (the background's) took the bodies' shot noise for texture, and a
    blob blurred beyond reading was read (the learned models call noise "sharp")."""
    rng = np.random.default_rng(3)
    clean = np.full((256, 256), 0.03)
    yy, xx = np.mgrid[0:256, 0:256]
    body = (yy - 128) ** 2 + (xx - 128) ** 2 < 70**2
    clean[body] = 0.7
    img = _shot(clean, rng)
    inner = (yy - 128) ** 2 + (xx - 128) ** 2 < 55**2  # away from the body's edge
    assert texture_mask(img)[inner].mean() < 0.02
    assert np.isnan(roi_sigma(np.zeros_like(img), img, (88, 88, 80, 80)).sigma_px)
    # structure above the bright noise is still texture: a 6 % ripple on the body
    rippled = clean + np.where(body, 0.06 * np.sin(xx / 2.0), 0.0)
    assert texture_mask(_shot(rippled, rng))[inner].mean() > 0.9


def test_sharp_bright_texture_is_not_taken_for_noise_where_no_bright_part_is_flat() -> None:
    """The slope is bounded by pure shot noise through the quiet point: a frame whose
    bright half is all pixel-fine texture shows no quiet bright block to read the slope
    from, and an unbounded fit would call that texture noise and refuse a focused
    region."""
    rng = np.random.default_rng(5)
    clean = np.full((256, 256), 0.3)
    clean[:, 128:] = 0.6 + rng.uniform(-0.05, 0.05, (256, 128))  # in focus, pixel-fine
    img = _shot(clean, rng)
    assert texture_mask(img)[:, 136:].mean() > 0.9
    assert texture_mask(img)[:, :120].mean() < 0.02
