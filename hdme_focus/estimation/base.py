"""What every defocus estimator shares: the protocol, input normalisation, ROI statistics.

Any estimator (HDME-Net or a classical baseline) turns one frame into a per-pixel
Gaussian blur sigma in pixels. Callers above (instrument, CLI) depend only on this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from hdme_focus.core.frame import F32, ImageInputError, saturation_mask


@runtime_checkable
class DefocusEstimator(Protocol):
    name: str

    def predict(self, image: ArrayLike, bit_depth: int | None = None) -> F32:
        """HxW float32 blur sigma in pixels for a gray or RGB frame of any dtype."""
        ...


def texture_mask(
    gray01: ArrayLike, threshold: float = 0.01, window_px: int = 15
) -> NDArray[np.bool_]:
    """Pixels with enough local contrast for blur to be measurable.

    Local standard deviation over a window, relative to full scale; flat regions
    carry no defocus information for any estimator.
    """
    g = np.asarray(gray01, dtype=np.float32)
    mean = cv2.blur(g, (window_px, window_px))
    sq = cv2.blur(g * g, (window_px, window_px))
    std = np.sqrt(np.clip(sq - mean * mean, 0.0, None))
    return np.asarray(std > threshold)


@dataclass(frozen=True)
class RoiSigma:
    """Robust blur of a region: median over textured, unsaturated pixels."""

    sigma_px: float
    spread_px: float  # median absolute deviation scaled to 1 sigma
    textured_fraction: float
    saturated_fraction: float

    @property
    def confidence(self) -> float:
        """0..1: share of usable pixels, discounted by the spread of the estimate."""
        if not np.isfinite(self.sigma_px):
            return 0.0
        rel = self.spread_px / max(self.sigma_px, 1.0)
        return float(self.textured_fraction * (1.0 - self.saturated_fraction) / (1.0 + rel))


def roi_sigma(
    sigma_map_px: ArrayLike,
    gray01: ArrayLike,
    roi: tuple[int, int, int, int] | None = None,
    min_textured_fraction: float = 0.02,
) -> RoiSigma:
    """Median sigma over the textured pixels of an ROI (x, y, w, h); NaN if too flat."""
    sig = np.asarray(sigma_map_px, dtype=np.float32)
    g = np.asarray(gray01, dtype=np.float32)
    if roi is not None:
        x, y, w, h = roi
        sig = sig[y : y + h, x : x + w]
        g = g[y : y + h, x : x + w]
    if sig.size == 0:
        raise ImageInputError(f"ROI {roi} is empty")
    sat = saturation_mask(g)
    use = texture_mask(g) & ~sat & np.isfinite(sig)
    frac = float(use.mean())
    if frac < min_textured_fraction:
        return RoiSigma(float("nan"), float("nan"), frac, float(sat.mean()))
    vals = sig[use]
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med)) * 1.4826)
    return RoiSigma(med, mad, frac, float(sat.mean()))
