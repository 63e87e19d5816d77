"""Refine a defocus map so it follows the frame's edges: an iterative weighted guided filter.

Any estimator's map is blurred across object boundaries (patches, receptive
fields, propagation). The guided filter (He et al. 2010) models the map in
each window as a linear function of the frame, q = a * I + b, so map edges
snap to image edges. Two changes from the plain filter, as in Galetto & Deng's
reference code:

- adaptive regularisation (Li et al., "Weighted guided image filtering", TIP
  2015): eps is divided by the window's variance relative to the frame's local
  average, so windows on an edge keep their slope a (edge preserved) and flat
  windows are smoothed harder;
- a variance-weighted average of the windows' coefficients (Ochotorena &
  Yamashita, TIP 2020): a pixel takes (a, b) mostly from the windows around it
  that do not straddle an edge, which removes the halo of the plain average.

An optional per-pixel confidence turns each window's fit into weighted least
squares, so untrusted map values (flat, saturated) are filled from trusted
neighbours with the same look. The filter runs `iterations` times, the frame
staying the guide. Everything is box filters (OpenCV), O(1) per pixel in the
radius. `cv2.ximgproc.guidedFilter` is not used: it is in opencv-contrib only
and has neither the weights nor the confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from hdme_focus.core.frame import F32, ImageInputError, to_gray_float
from hdme_focus.estimation.base import DefocusEstimate, DefocusEstimator

F64 = NDArray[np.float64]

VARIANCE_POWER = 2.0  # exponent of the window-variance weights (reference: 2 to 4)
_VAR_FLOOR = 1e-6  # variance floor: a window this flat counts as flat (std 1e-3 of full scale)
_CONF_FLOOR = 1e-3  # a window with no confident pixel falls back to the plain mean


def _box(x: F64, radius_px: int) -> F64:
    """Mean over a (2r+1)^2 window, borders reflected (OpenCV's REFLECT_101)."""
    k = 2 * radius_px + 1
    return np.asarray(
        cv2.boxFilter(x, cv2.CV_64F, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT_101),
        dtype=np.float64,
    )


def _check(sigma_px: ArrayLike, guide: ArrayLike, confidence: ArrayLike | None) -> tuple[F64, ...]:
    p = np.asarray(sigma_px, dtype=np.float64)
    g = np.asarray(guide, dtype=np.float64)
    if p.ndim != 2 or g.shape != p.shape:
        raise ImageInputError(
            f"refine: sigma map {p.shape} and guide {g.shape} must be 2-D and the same size"
        )
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(g))):
        raise ImageInputError("refine: sigma map and guide must be finite (mask NaN first)")
    c = np.ones_like(p) if confidence is None else np.asarray(confidence, dtype=np.float64)
    if c.shape != p.shape:
        raise ImageInputError(f"refine: confidence {c.shape} must match the map {p.shape}")
    c = np.clip(np.nan_to_num(c, nan=0.0), 0.0, None) + _CONF_FLOOR
    return p, g, c


def _weighted_guided_pass(p: F64, g: F64, c: F64, radius_px: int, eps: float) -> F64:
    """One pass: per-window confidence-weighted linear fit p ~ a g + b, then blend the windows."""
    cw = _box(c, radius_px)
    mu_g = _box(c * g, radius_px) / cw
    mu_p = _box(c * p, radius_px) / cw
    cov_gp = _box(c * g * p, radius_px) / cw - mu_g * mu_p
    var_g = np.maximum(_box(c * g * g, radius_px) / cw - mu_g * mu_g, 0.0)
    # Li et al. 2015: a window's variance relative to the local mean of (1 / variance)
    inv = 1.0 / (var_g + _VAR_FLOOR)
    edge_weight = (var_g + _VAR_FLOOR) * _box(inv, radius_px)
    a = cov_gp / (var_g + eps / edge_weight)
    b = mu_p - a * mu_g
    # Ochotorena & Yamashita 2020: windows that straddle an edge count less
    w = 1.0 / ((var_g + _VAR_FLOOR) ** VARIANCE_POWER)
    w /= float(w.max())  # scale-free; keeps box sums well inside float64 range
    wn = _box(w, radius_px)
    return (_box(w * a, radius_px) * g + _box(w * b, radius_px)) / wn


def refine_sigma_map(
    sigma_px: F32,
    guide_gray01: F32,
    *,
    radius_px: int = 8,
    eps: float = 1e-3,
    iterations: int = 3,
    confidence: F32 | None = None,
) -> F32:
    """The sigma map filtered `iterations` times with the frame (gray, 0..1) as the guide.

    radius_px sets the window (2r+1 px); eps (in guide variance, full scale 1)
    sets which contrast counts as an edge: steps with std well above sqrt(eps)
    are kept, weaker texture is smoothed over. Values stay within the input's
    range. The output has the map's shape and dtype float32.
    """
    if radius_px < 1:
        raise ImageInputError(f"refine: radius_px = {radius_px}; use at least 1")
    if not eps > 0:
        raise ImageInputError(f"refine: eps = {eps}; use a positive guide variance (e.g. 1e-3)")
    if iterations < 1:
        raise ImageInputError(f"refine: iterations = {iterations}; use at least 1")
    p, g, c = _check(sigma_px, guide_gray01, confidence)
    lo, hi = float(p.min()), float(p.max())
    r = min(radius_px, (min(p.shape) - 1) // 2) or 1  # a window never wider than the frame
    out = p
    for _ in range(iterations):
        out = _weighted_guided_pass(out, g, c, r, eps)
    return np.clip(out, lo, hi).astype(np.float32)


@dataclass
class RefinedEstimator:
    """Any estimator with its map refined by the frame: the `--refine` option.

    The confidence map of the base estimator (where it has one) weights the
    refinement and is passed through unchanged.
    """

    base: DefocusEstimator
    radius_px: int = 8
    eps: float = 1e-3
    iterations: int = 3

    @property
    def name(self) -> str:
        return f"{self.base.name}+refine"

    @property
    def sigma_max_px(self) -> float:
        return self.base.sigma_max_px

    def estimate(
        self, image: ArrayLike, bit_depth: int | None = None, *, downscale: float = 1.0
    ) -> DefocusEstimate:
        raw = self.base.estimate(image, bit_depth, downscale=downscale)
        guide = to_gray_float(image, bit_depth)
        sigma = refine_sigma_map(
            raw.sigma_px,
            guide,
            radius_px=self.radius_px,
            eps=self.eps,
            iterations=self.iterations,
            confidence=raw.confidence,
        )
        return DefocusEstimate(sigma, raw.confidence, raw.scale_px)

    def predict(
        self, image: ArrayLike, bit_depth: int | None = None, *, downscale: float = 1.0
    ) -> F32:
        sigma: F32 = self.estimate(image, bit_depth, downscale=downscale).sigma_px
        return sigma
