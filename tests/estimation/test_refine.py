"""The iterative weighted guided filter: edges kept, noise smoothed, same as the formulas."""

from __future__ import annotations

import numpy as np
import pytest

from hdme_focus.core.frame import F32, ImageInputError
from hdme_focus.estimation.base import DefocusEstimate, GrayEstimator
from hdme_focus.estimation.refine import (
    _CONF_FLOOR,
    _VAR_FLOOR,
    VARIANCE_POWER,
    RefinedEstimator,
    refine_sigma_map,
)


def _step_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Guide: dark left half, bright right half; true map 1 px left, 6 px right; noisy map."""
    h, w = 48, 64
    guide = np.full((h, w), 0.2, np.float32)
    guide[:, w // 2 :] = 0.8
    truth = np.where(guide > 0.5, 6.0, 1.0).astype(np.float32)
    # an estimator's map: smeared across the edge and noisy
    import cv2

    smeared = cv2.blur(truth, (15, 15), borderType=cv2.BORDER_REFLECT_101)
    noisy = (smeared + rng.normal(0.0, 0.8, truth.shape)).astype(np.float32)
    return guide, truth, noisy


def test_preserves_the_guide_step_edge_and_smooths_flat_regions() -> None:
    rng = np.random.default_rng(1)
    guide, truth, noisy = _step_scene(rng)
    out = refine_sigma_map(noisy, guide, radius_px=6, eps=1e-3, iterations=3)
    w = guide.shape[1]
    # the edge: the columns next to it are back on their own side's value
    left_edge = out[:, w // 2 - 2 : w // 2]
    right_edge = out[:, w // 2 : w // 2 + 2]
    assert np.abs(left_edge - 1.0).mean() < 0.6
    assert np.abs(right_edge - 6.0).mean() < 0.6
    assert np.abs(out - truth).mean() < 0.5 * np.abs(noisy - truth).mean()
    # flat regions: the noise is gone
    inner = (slice(4, -4), slice(4, w // 2 - 8))
    assert out[inner].std() < 0.25 * noisy[inner].std()


def test_plain_box_blur_would_fail_the_edge_check() -> None:
    """Guard the edge test itself: a filter that ignores the guide does not pass it."""
    import cv2

    rng = np.random.default_rng(1)
    guide, _, noisy = _step_scene(rng)
    flat_guide = np.full_like(guide, 0.5)
    out = refine_sigma_map(noisy, flat_guide, radius_px=6, eps=1e-3, iterations=3)
    w = guide.shape[1]
    assert np.abs(out[:, w // 2 - 2 : w // 2] - 1.0).mean() > 0.6
    assert out.std() < cv2.blur(noisy, (13, 13)).std() + 1.0


def _reference(p, g, c, r, eps, iterations):  # type: ignore[no-untyped-def]
    """Direct loops over windows, straight from the formulas (slow, float64)."""
    h, w = p.shape
    c = np.clip(c, 0, None) + _CONF_FLOOR

    def pad(x):  # type: ignore[no-untyped-def]
        return np.pad(x, r, mode="reflect")

    def box(x):  # type: ignore[no-untyped-def]
        xp = pad(x)
        out = np.empty_like(x)
        for i in range(h):
            for j in range(w):
                out[i, j] = xp[i : i + 2 * r + 1, j : j + 2 * r + 1].mean()
        return out

    lo, hi = p.min(), p.max()
    for _ in range(iterations):
        gp, pp, cp = pad(g), pad(p), pad(c)
        a = np.empty_like(p)
        b = np.empty_like(p)
        var = np.empty_like(p)
        for i in range(h):
            for j in range(w):
                win = (slice(i, i + 2 * r + 1), slice(j, j + 2 * r + 1))
                cw, gw, pw = cp[win], gp[win], pp[win]
                mg = (cw * gw).sum() / cw.sum()
                mp = (cw * pw).sum() / cw.sum()
                var[i, j] = max((cw * (gw - mg) ** 2).sum() / cw.sum(), 0.0)
                a[i, j] = (cw * (gw - mg) * (pw - mp)).sum() / cw.sum()
                b[i, j] = mp
        inv_mean = box(1.0 / (var + _VAR_FLOOR))
        gamma = (var + _VAR_FLOOR) * inv_mean
        a = a / (var + eps / gamma)
        # b = mean_p - a mean_g, recomputed per window with the final a
        mg_map = np.empty_like(p)
        for i in range(h):
            for j in range(w):
                win = (slice(i, i + 2 * r + 1), slice(j, j + 2 * r + 1))
                cw, gw = cp[win], gp[win]
                mg_map[i, j] = (cw * gw).sum() / cw.sum()
        b = b - a * mg_map
        wt = 1.0 / (var + _VAR_FLOOR) ** VARIANCE_POWER
        wt = wt / wt.max()
        p = (box(wt * a) * g + box(wt * b)) / box(wt)
    return np.clip(p, lo, hi)


def test_matches_a_direct_loop_implementation() -> None:
    rng = np.random.default_rng(3)
    h, w = 11, 13
    g = rng.random((h, w))
    g[:, 7:] += 0.8
    g /= g.max()
    p = rng.random((h, w)) * 5.0
    c = rng.random((h, w))
    got = refine_sigma_map(
        p.astype(np.float32),
        g.astype(np.float32),
        radius_px=2,
        eps=1e-2,
        iterations=2,
        confidence=c.astype(np.float32),
    )
    want = _reference(
        p.astype(np.float32).astype(np.float64),
        g.astype(np.float32).astype(np.float64),
        c.astype(np.float32).astype(np.float64),
        2,
        1e-2,
        2,
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_confidence_fills_untrusted_pixels_from_trusted_neighbours() -> None:
    guide = np.full((40, 40), 0.5, np.float32)
    sigma = np.full((40, 40), 2.0, np.float32)
    sigma[15:25, 15:25] = 9.0  # a wrong patch the estimator did not trust
    conf = np.ones_like(sigma)
    conf[15:25, 15:25] = 0.0
    trusted = refine_sigma_map(sigma, guide, radius_px=8, confidence=conf)
    untrusted = refine_sigma_map(sigma, guide, radius_px=8)
    assert abs(float(trusted[20, 20]) - 2.0) < 0.3
    assert float(untrusted[20, 20]) > 2.5  # without the weights the wrong patch leaks


def test_bad_inputs_raise_one_clear_error() -> None:
    sigma = np.ones((20, 20), np.float32)
    with pytest.raises(ImageInputError, match="same size"):
        refine_sigma_map(sigma, np.ones((20, 21), np.float32))
    with pytest.raises(ImageInputError, match="radius_px"):
        refine_sigma_map(sigma, sigma, radius_px=0)
    bad = sigma.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ImageInputError, match="finite"):
        refine_sigma_map(bad, sigma)


class _Stub(GrayEstimator):
    """An estimator with a known map (a smeared step) and full confidence."""

    name = "stub"
    sigma_max_px = 10.0

    def predict_gray(self, gray01: F32) -> F32:
        import cv2

        step = np.where(gray01 > 0.5, 6.0, 1.0).astype(np.float32)
        return np.asarray(cv2.blur(step, (15, 15)), dtype=np.float32)

    def estimate_gray(self, gray01: F32) -> DefocusEstimate:
        sigma = self.predict_gray(gray01)
        return DefocusEstimate(sigma, np.ones_like(sigma))


def test_refined_estimator_wraps_any_estimator() -> None:
    img = np.full((40, 60), 0.2, np.float32)
    img[:, 30:] = 0.8
    est = RefinedEstimator(_Stub())
    assert est.name == "stub+refine"
    assert est.sigma_max_px == 10.0
    raw = _Stub().predict(img)
    out = est.estimate(img)
    assert out.sigma_px.shape == img.shape
    assert np.all(out.confidence == 1.0)
    edge = (slice(None), slice(27, 33))
    truth = np.where(img > 0.5, 6.0, 1.0)[edge]
    assert np.abs(out.sigma_px[edge] - truth).mean() < 0.5 * np.abs(raw[edge] - truth).mean()
    np.testing.assert_array_equal(est.predict(img), out.sigma_px)


def test_any_estimator_by_name_with_the_refine_suffix() -> None:
    from hdme_focus.estimation import load_estimator

    est = load_estimator("reblur+refine", device="cpu")
    assert isinstance(est, RefinedEstimator)
    assert est.name == "reblur+refine"
    img = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    assert est.predict(img).shape == img.shape
