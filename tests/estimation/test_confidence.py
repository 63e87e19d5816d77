"""Issue 11 items 2-3: input normalisation free of brightness and contrast; a learned
per-pixel confidence, calibrated through a Laplace error scale, used by ROI statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdme_focus.estimation.base import roi_sigma
from hdme_focus.estimation.estimator import (
    LAPLACE_68,
    HDMEEstimator,
    confidence_from_scale,
    scale_from_confidence,
)
from hdme_focus.estimation.model import build_model, local_contrast_normalize, standardize
from hdme_focus.estimation.train import TrainRecipe, loss_fn


def _texture(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, 64, 64, generator=g)
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1)


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
    b = np.array([0.05, 0.3, 1.0, 5.0], np.float32)
    sigma = np.array([0.5, 2.0, 4.0, 9.0], np.float32)
    np.testing.assert_allclose(scale_from_confidence(confidence_from_scale(b, sigma), sigma), b,
                               rtol=1e-4)  # fmt: skip
    assert np.all(np.diff(confidence_from_scale(b, np.full(4, 2.0, np.float32))) < 0)
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
    frame = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    out = est.estimate(frame)
    assert out.sigma_px.shape == out.confidence.shape == frame.shape
    assert float(out.confidence.min()) >= 0.0 and float(out.confidence.max()) <= 1.0
    sure = roi_sigma(out.sigma_px, frame, confidence=np.ones_like(frame))
    unsure = roi_sigma(out.sigma_px, frame, confidence=np.zeros_like(frame))
    assert np.isfinite(sure.sigma_px) and sure.confidence == 1.0
    assert not np.isfinite(unsure.sigma_px) and unsure.confidence == 0.0  # refused
