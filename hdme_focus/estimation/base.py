"""What every defocus estimator shares: the interface, downscaling, confidence, ROI statistics.

Any estimator (HDME-Net, a classical baseline, the patch classifier) turns one
frame into a per-pixel Gaussian blur sigma in pixels and a confidence in [0, 1].
Callers above (instrument, CLI) depend only on `DefocusEstimator`; they never
probe an estimator for what it can do. Free of torch, so the classical
estimators work without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from hdme_focus.core.frame import F32, ImageInputError, saturation_mask, to_gray_float
from hdme_focus.estimation.noise import FrameNoise, contrast_beyond_noise, frame_noise

MIN_DOWNSCALED_PX = 8  # a downscaled frame keeps at least this many pixels per side
TEXTURE_STD = 0.01  # local std (full scale) at which a pixel counts as textured


@dataclass(frozen=True)
class DefocusEstimate:
    """A sigma map (px) and how far to trust each pixel of it (0 = not at all, 1 = fully).

    `scale_px`: the learned Laplace error scale b (px) behind `confidence`, for
    estimators that predict their own error; None where the confidence is the
    texture heuristic. Callers trust a learned confidence in place of the
    heuristic (ROI statistics, autofocus refusal, the depth mask).
    """

    sigma_px: F32
    confidence: F32
    scale_px: F32 | None = None

    @property
    def learned(self) -> bool:
        return self.scale_px is not None


# A learned error scale b becomes a confidence: the share of a know-nothing reading's error
# that the reading removes. Guessing the middle of a uniform 0..sigma_max prior errs by
# sigma_max / 4 on average (the Laplace scale a network learns where it cannot read blur,
# e.g. on a featureless field), so c = 1 - b / (sigma_max / 4), clipped to [0, 1].
UNINFORMED_SHARE = 0.25
LAPLACE_68 = 1.1394342831883648  # ln(1 / 0.32): a Laplace(b) error lies within +-1.139 b, p 0.68
# Pixels whose learned confidence is below this carry too little to count in an ROI or a
# depth map (b above 0.8 of the know-nothing error).
MIN_LEARNED_CONFIDENCE = 0.2


def confidence_from_scale(b_px: F32, sigma_max_px: float) -> F32:
    """Learned error scale b (px) -> confidence in [0, 1] (see UNINFORMED_SHARE)."""
    b = np.asarray(b_px, dtype=np.float32)
    c: F32 = np.clip(1.0 - b / np.float32(UNINFORMED_SHARE * sigma_max_px), 0.0, 1.0)
    return c.astype(np.float32)


def scale_from_confidence(confidence: F32, sigma_max_px: float) -> F32:
    """Inverse of `confidence_from_scale` (exact where the confidence is not clipped)."""
    c = np.asarray(confidence, dtype=np.float32)
    return ((1.0 - c) * np.float32(UNINFORMED_SHARE * sigma_max_px)).astype(np.float32)


@runtime_checkable
class DefocusEstimator(Protocol):
    """Frame -> blur map. `name` identifies the method and its weights (calibrations keep it)."""

    @property
    def name(self) -> str:
        """Method and weights, e.g. `hdme-net:hdme-lite@1a2b3c4d`; wrappers may derive it."""
        ...

    @property
    def sigma_max_px(self) -> float:
        """Top of the range the estimator reads (inf for one without a ceiling)."""
        ...

    def predict(
        self, image: ArrayLike, bit_depth: int | None = None, *, downscale: float = 1.0
    ) -> F32:
        """HxW float32 blur sigma in px for a gray or RGB frame of any dtype.

        downscale=k > 1 estimates on the frame resized by 1/k and multiplies sigma
        by k: blur up to k * sigma_max_px becomes measurable, on a k times coarser map.
        """
        ...

    def estimate(
        self, image: ArrayLike, bit_depth: int | None = None, *, downscale: float = 1.0
    ) -> DefocusEstimate:
        """`predict` plus a per-pixel confidence in [0, 1]."""
        ...


def check_downscale(downscale: float) -> None:
    if not downscale >= 1.0:
        raise ImageInputError(f"downscale must be >= 1, got {downscale}; use 1 for full size")


def shrink(gray01: F32, downscale: float) -> F32:
    """The frame resized by 1/downscale (area average), at least MIN_DOWNSCALED_PX a side."""
    if downscale == 1.0:
        return gray01
    h, w = gray01.shape
    size = (
        max(MIN_DOWNSCALED_PX, round(w / downscale)),
        max(MIN_DOWNSCALED_PX, round(h / downscale)),
    )
    return np.asarray(cv2.resize(gray01, size, interpolation=cv2.INTER_AREA), dtype=np.float32)


def enlarge(small: F32, shape: tuple[int, ...]) -> F32:
    """A coarse map back at the frame's size (bilinear); unchanged if already that size."""
    if small.shape == shape:
        return small
    h, w = shape[:2]
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def texture_contrast(
    gray01: ArrayLike, window_px: int = 15, noise: FrameNoise | None = None
) -> F32:
    """Local std beyond the camera's noise at that brightness: the structure a blur could
    act on. A flat wall seen by a noisy camera has a local std of its noise, and none of
    it is texture. noise None: read from the frame (`noise.frame_noise`)."""
    mean, std = local_mean_std(gray01, window_px)
    n = frame_noise(gray01) if noise is None else noise
    return contrast_beyond_noise(std, mean, n, window_px)


def texture_mask(
    gray01: ArrayLike,
    threshold: float = TEXTURE_STD,
    window_px: int = 15,
    noise: FrameNoise | None = None,
) -> NDArray[np.bool_]:
    """Pixels with enough local contrast beyond the noise for blur to be measurable.

    Flat regions carry no defocus information for any estimator. noise=NO_NOISE keeps
    the raw local std (the held-out metrics' fixed definition, `evaluate`).
    """
    return np.asarray(texture_contrast(gray01, window_px, noise) > threshold)


def local_mean_std(gray01: ArrayLike, window_px: int = 15) -> tuple[F32, F32]:
    """Mean and standard deviation over a window_px box around each pixel (full scale)."""
    g = np.asarray(gray01, dtype=np.float32)
    mean = cv2.blur(g, (window_px, window_px))
    sq = cv2.blur(g * g, (window_px, window_px))
    std = np.sqrt(np.clip(sq - mean * mean, 0.0, None))
    return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)


def local_std(gray01: ArrayLike, window_px: int = 15) -> F32:
    """Standard deviation over a window_px box around each pixel (full-scale units)."""
    return local_mean_std(gray01, window_px)[1]


def texture_confidence(gray01: F32, window_px: int = 15) -> F32:
    """Heuristic confidence for estimators without their own: texture, and not clipped.

    c / (c + TEXTURE_STD) of the local contrast c beyond the noise (`texture_contrast`):
    0.5 at the texture threshold, towards 1 on strong texture, 0 on flat regions (no
    blur information, however noisy) and on saturated pixels (clipping destroys the
    edge profile every estimator reads).
    """
    c = texture_contrast(gray01, window_px)
    conf = c / (c + np.float32(TEXTURE_STD))
    conf[saturation_mask(gray01)] = 0.0
    return conf.astype(np.float32)


class GrayEstimator(ABC):
    """The shared body of the interface: one gray conversion, downscaling, confidence.

    Subclasses implement `predict_gray` on a gray float frame at the scale they
    are given; they override `estimate_gray` when they have a better confidence
    than the texture heuristic.
    """

    name: str
    sigma_max_px: float

    @abstractmethod
    def predict_gray(self, gray01: F32) -> F32:
        """Sigma (px) of a gray [0, 1] float32 frame, same shape."""

    def estimate_gray(self, gray01: F32) -> DefocusEstimate:
        return DefocusEstimate(self.predict_gray(gray01), texture_confidence(gray01))

    def predict(
        self, image: ArrayLike, bit_depth: int | None = None, *, downscale: float = 1.0
    ) -> F32:
        check_downscale(downscale)
        gray = to_gray_float(image, bit_depth)
        sigma = self.predict_gray(shrink(gray, downscale)) * np.float32(downscale)
        return enlarge(sigma, gray.shape)

    def estimate(
        self, image: ArrayLike, bit_depth: int | None = None, *, downscale: float = 1.0
    ) -> DefocusEstimate:
        check_downscale(downscale)
        gray = to_gray_float(image, bit_depth)
        est = self.estimate_gray(shrink(gray, downscale))
        k = np.float32(downscale)
        sigma = enlarge(est.sigma_px * k, gray.shape)
        if est.scale_px is None:
            confidence = np.clip(enlarge(est.confidence, gray.shape), 0.0, 1.0)
            return DefocusEstimate(sigma, confidence.astype(np.float32))
        # a learned error is in the small frame's pixels: k times larger in the frame's own,
        # against a range k times larger too (the confidence is the same; the scale is not)
        scale = enlarge(est.scale_px * k, gray.shape)
        confidence = confidence_from_scale(scale, self.sigma_max_px * downscale)
        confidence[saturation_mask(gray)] = 0.0
        return DefocusEstimate(sigma, confidence, scale)


@dataclass(frozen=True)
class RoiSigma:
    """Robust blur of a region: median over textured, unsaturated pixels."""

    sigma_px: float
    spread_px: float  # median absolute deviation scaled to 1 sigma
    textured_fraction: float
    saturated_fraction: float
    mean_confidence: float | None = None  # the estimator's own, over the ROI, when given
    contrast: float = float("nan")  # median local std (full scale) of the pixels used

    @property
    def confidence(self) -> float:
        """0..1: the estimator's mean confidence over the ROI when it has one; else the
        share of usable pixels, discounted by the spread of the estimate."""
        if not np.isfinite(self.sigma_px):
            return 0.0
        if self.mean_confidence is not None:
            return self.mean_confidence
        rel = self.spread_px / max(self.sigma_px, 1.0)
        return float(self.textured_fraction * (1.0 - self.saturated_fraction) / (1.0 + rel))


def roi_sigma(
    sigma_map_px: ArrayLike,
    gray01: ArrayLike,
    roi: tuple[int, int, int, int] | None = None,
    min_textured_fraction: float = 0.02,
    confidence: ArrayLike | None = None,
    min_confidence: float = 0.5,
    noise: FrameNoise | None = None,
) -> RoiSigma:
    """Median sigma over the textured pixels of an ROI (x, y, w, h); NaN if too flat.

    Textured: local contrast beyond the frame's noise above TEXTURE_STD, so a
    flat region under a noisy camera is flat, not "textured" by its noise.

    With the estimator's per-pixel confidence, only pixels at or above
    min_confidence count (NaN when too few are), and the result carries the
    ROI's mean confidence. noise: the frame's (`frame_noise` of the whole frame, read
    when None): pass it when reading several ROIs of one frame, or an ROI of a crop,
    so every reading judges texture against the same noise.
    """
    sig = np.asarray(sigma_map_px, dtype=np.float32)
    g = np.asarray(gray01, dtype=np.float32)
    conf = None if confidence is None else np.asarray(confidence, dtype=np.float32)
    # the whole frame's: in the ROI alone, a sharp region's own texture would read as noise
    frame = frame_noise(g) if noise is None else noise
    if roi is not None:
        x, y, w, h = roi
        sig = sig[y : y + h, x : x + w]
        g = g[y : y + h, x : x + w]
        conf = None if conf is None else conf[y : y + h, x : x + w]
    if sig.size == 0:
        raise ImageInputError(f"ROI {roi} is empty")
    sat = saturation_mask(g)
    level, spread = local_mean_std(g)  # raw spread: the contrast calibrations record
    excess = contrast_beyond_noise(spread, level, frame)
    use = (excess > TEXTURE_STD) & ~sat & np.isfinite(sig)
    mean_conf = None
    if conf is not None:
        use &= conf >= min_confidence
        mean_conf = float(conf.mean())
    frac = float(use.mean())
    if frac < min_textured_fraction:
        return RoiSigma(float("nan"), float("nan"), frac, float(sat.mean()), mean_conf)
    vals = sig[use]
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med)) * 1.4826)
    contrast = float(np.median(spread[use]))
    return RoiSigma(med, mad, frac, float(sat.mean()), mean_conf, contrast)


def roi_reading(
    estimate: DefocusEstimate,
    gray01: ArrayLike,
    roi: tuple[int, int, int, int] | None = None,
    noise: FrameNoise | None = None,
) -> RoiSigma:
    """The ROI's blur as autofocus reads it: a learned confidence gates the pixels
    (MIN_LEARNED_CONFIDENCE) and is the ROI's confidence; a heuristic one is not used
    (the texture mask already gates, `RoiSigma.confidence` discounts the spread).
    noise as in `roi_sigma`."""
    if not estimate.learned:
        return roi_sigma(estimate.sigma_px, gray01, roi, noise=noise)
    return roi_sigma(
        estimate.sigma_px,
        gray01,
        roi,
        confidence=estimate.confidence,
        min_confidence=MIN_LEARNED_CONFIDENCE,
        noise=noise,
    )
