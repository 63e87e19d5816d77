"""Issue 11 items 2-3: input normalisation free of brightness and contrast; a learned
per-pixel confidence, calibrated through a Laplace error scale, used by ROI statistics."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
import torch

from hdme_focus.core.frame import saturation_mask
from hdme_focus.estimation.base import (
    LAPLACE_68,
    MIN_LEARNED_CONFIDENCE,
    confidence_from_scale,
    roi_reading,
    roi_sigma,
    scale_from_confidence,
)
from hdme_focus.estimation.estimator import HDMEEstimator
from hdme_focus.estimation.model import build_model, local_contrast_normalize, standardize
from hdme_focus.estimation.train import TrainRecipe, loss_fn


def _texture(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, 64, 64, generator=g)
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1)


def _textured_frame(shape: tuple[int, int], seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Smoothed noise in [0.05, 0.95]: texture, where raw white noise would be read as the
    camera's noise (`noise.frame_noise`) and not as texture."""
    raw = np.random.default_rng(seed).random(shape).astype(np.float32)
    smooth = cv2.GaussianBlur(raw, (0, 0), 1.5)
    lo, hi = float(smooth.min()), float(smooth.max())
    return np.asarray(0.05 + 0.9 * (smooth - lo) / (hi - lo), dtype=np.float32)


def test_local_contrast_normalisation_ignores_gain_and_offset() -> None:
    x = _texture()
    a = local_contrast_normalize(standardize(x))
    b = local_contrast_normalize(standardize(0.02 * x + 0.4))
    torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_a_featureless_frame_stays_at_noise_level_instead_of_unit_variance() -> None:
    g = torch.Generator().manual_seed(1)
    noise = 0.5 + 0.003 * torch.randn(1, 1, 64, 64, generator=g)
    textured = 0.5 + 0.3 * (_texture() - 0.5) + 0.003 * torch.randn(1, 1, 64, 64, generator=g)
    flat_std = float(local_contrast_normalize(standardize(noise)).std())
    tex_std = float(local_contrast_normalize(standardize(textured)).std())
    assert float(standardize(noise).std()) == pytest.approx(1.0, abs=1e-3)  # the old problem
    assert flat_std < 0.6 < tex_std


def test_confidence_and_error_scale_are_inverse() -> None:
    b = np.array([0.05, 0.3, 1.0, 2.0], np.float32)
    np.testing.assert_allclose(scale_from_confidence(confidence_from_scale(b, 10.0), 10.0), b,
                               rtol=1e-4)  # fmt: skip
    assert np.all(np.diff(confidence_from_scale(b, 10.0)) < 0)
    # the know-nothing error (sigma_max / 4: guessing the middle of the range) is no confidence
    assert float(confidence_from_scale(np.float32([2.5, 4.0]), 10.0).max()) == 0.0
    assert pytest.approx(1.1394, abs=1e-3) == LAPLACE_68  # P(|e| < 1.139 b) = 0.68


def test_uncertainty_head_learns_a_larger_scale_where_errors_are_larger() -> None:
    """The NLL term trains only log b (sigma detached): b follows the error it sees."""
    pred_sigma = torch.zeros(2, 1, 4, 4)
    target = torch.cat([torch.full((1, 1, 4, 4), 0.1), torch.full((1, 1, 4, 4), 3.0)])
    log_b = torch.zeros(2, 1, 4, 4, requires_grad=True)
    recipe = TrainRecipe()
    opt = torch.optim.Adam([log_b], lr=0.1)
    for _ in range(300):
        loss = loss_fn(torch.cat([pred_sigma, log_b], dim=1), target, recipe)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    b = torch.exp(log_b.detach())
    assert float(b[0].mean()) == pytest.approx(0.1, rel=0.2)  # Laplace ML scale = mean |e|
    assert float(b[1].mean()) == pytest.approx(3.0, rel=0.2)


def test_estimate_gives_the_learned_confidence_and_roi_sigma_uses_it() -> None:
    model = build_model("hdme-lite-conf")
    est = HDMEEstimator(model, sigma_max_px=10.0, device="cpu")
    frame = _textured_frame((48, 64), 0)
    out = est.estimate(frame)
    assert out.sigma_px.shape == out.confidence.shape == frame.shape
    assert float(out.confidence.min()) >= 0.0 and float(out.confidence.max()) <= 1.0
    sure = roi_sigma(out.sigma_px, frame, confidence=np.ones_like(frame))
    unsure = roi_sigma(out.sigma_px, frame, confidence=np.zeros_like(frame))
    assert np.isfinite(sure.sigma_px) and sure.confidence == 1.0
    assert not np.isfinite(unsure.sigma_px) and unsure.confidence == 0.0  # refused
    assert out.learned and out.scale_px is not None
    unclipped = ~saturation_mask(frame)  # saturated pixels have no confidence at all
    np.testing.assert_allclose(
        out.confidence[unclipped], confidence_from_scale(out.scale_px, 10.0)[unclipped]
    )
    assert not out.confidence[~unclipped].any()


def test_a_downscaled_reading_keeps_its_confidence_and_scales_its_error() -> None:
    """At 1/k size the network errs by b small-frame pixels: k b in the frame's own, against
    a range k times larger, so the confidence of the same reading is unchanged."""
    est = HDMEEstimator(build_model("hdme-lite-conf"), sigma_max_px=10.0, device="cpu")
    frame = np.random.default_rng(1).random((96, 128)).astype(np.float32)
    small = est.estimate_gray(cv2.resize(frame, (64, 48), interpolation=cv2.INTER_AREA))
    down = est.estimate(frame, downscale=2.0)
    assert small.scale_px is not None and down.scale_px is not None
    assert float(np.median(down.scale_px)) == pytest.approx(
        2.0 * float(np.median(small.scale_px)), rel=0.05
    )
    assert float(np.median(down.confidence)) == pytest.approx(
        float(np.median(small.confidence)), abs=0.02
    )


def test_roi_reading_gates_by_a_learned_confidence_and_not_by_a_heuristic_one() -> None:
    from hdme_focus.estimation.base import DefocusEstimate

    frame = _textured_frame((32, 32), 2)  # all textured
    sigma = np.full(frame.shape, 2.0, np.float32)
    low = np.full(frame.shape, MIN_LEARNED_CONFIDENCE / 2, np.float32)
    learned = DefocusEstimate(sigma, low, scale_from_confidence(low, 10.0))
    heuristic = DefocusEstimate(sigma, low)
    assert not np.isfinite(roi_reading(learned, frame).sigma_px)  # the model cannot read it
    assert roi_reading(heuristic, frame).sigma_px == pytest.approx(2.0)
