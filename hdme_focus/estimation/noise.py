"""The camera's noise, read from the frame itself, as a function of brightness.

Texture is contrast beyond the noise (`base.texture_contrast`): a flat wall seen by
a noisy camera has a local std of its noise and nothing for a blur to act on.
Shot noise grows with brightness (variance = floor + slope * level), so one number
per frame is wrong for a fluorescence frame, whose dark background is quiet and
whose bright flat cell bodies are not: their noise passed for texture.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike

from hdme_focus.core.frame import F32

# Immerkaer's kernel: the difference of two Laplacians, blind to planes and to quadratics,
# so on a white-noise frame of std n it responds with std 6 n (its weights' squares sum to 36)
IMMERKAER_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)

NOISE_BLOCK_PX = 32  # the frame is read for noise in blocks this size ...
NOISE_BLOCK_QUANTILE = 0.1  # ... and the quietest tenth of them speak for it
NOISE_LEVEL_BINS = 6  # brightness bins the slope of variance against level is read from


@dataclass(frozen=True)
class FrameNoise:
    """variance(level) = quiet_std^2 + slope_var * (level - quiet_level), never below 0.

    quiet_std: the std of the quietest blocks (full scale), at their mean level
    quiet_level. slope_var: how fast the variance grows with level (shot noise),
    at most quiet_std^2 / quiet_level, the slope of pure shot noise through the
    quiet point: a frame whose bright parts are all sharp texture shows no quiet
    bright block, and that bound keeps its texture from being taken for noise.
    """

    quiet_std: float
    quiet_level: float = 0.0
    slope_var: float = 0.0

    def std_at(self, level: ArrayLike) -> F32:
        """The noise std at each brightness (full scale) of a map."""
        lv = np.asarray(level, dtype=np.float32)
        var = np.float32(self.quiet_std**2) + np.float32(self.slope_var) * (
            lv - np.float32(self.quiet_level)
        )
        return np.asarray(np.sqrt(np.maximum(var, 0.0)), dtype=np.float32)


NO_NOISE = FrameNoise(0.0)  # raw local std: the held-out metrics' fixed definition


def _gray(gray01: ArrayLike) -> F32:
    g = np.asarray(gray01, dtype=np.float32)
    if g.ndim == 3:  # a colour frame: its gray, as every estimator reads it
        g = np.asarray(g.mean(axis=2), dtype=np.float32)
    return g


def frame_noise(gray01: ArrayLike) -> FrameNoise:
    """The frame's white noise and how it grows with brightness, from its finest residual.

    J. Immerkaer, "Fast noise variance estimation", CVIU 64(2), 1996, made robust:
    the median residual of each 32 px block, and the quietest tenth of the blocks
    (overall, and within each of a few brightness bins for the slope), so sharp
    fine texture (which the kernel also sees) does not pass for noise where flatter
    or blurred parts of the frame show the camera's own.
    """
    g = _gray(gray01)
    if g.ndim != 2 or g.shape[0] < 3 or g.shape[1] < 3:
        return NO_NOISE
    r = np.abs(cv2.filter2D(g, -1, IMMERKAER_KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1])
    b = NOISE_BLOCK_PX
    ny, nx = r.shape[0] // b, r.shape[1] // b
    if ny * nx < 4:
        return FrameNoise(1.4826 * float(np.median(r)) / 6.0, float(g.mean()))

    def blocks(a: F32) -> F32:
        cut = a[: ny * b, : nx * b].reshape(ny, b, nx, b).transpose(0, 2, 1, 3)
        return np.asarray(cut.reshape(ny * nx, b * b), dtype=np.float32)

    std = 1.4826 * np.median(blocks(r), axis=1) / 6.0
    level = blocks(g[1:-1, 1:-1]).mean(axis=1)
    quiet_std = float(np.quantile(std, NOISE_BLOCK_QUANTILE))
    quiet = std <= quiet_std
    quiet_level = float(np.median(level[quiet]))
    return FrameNoise(quiet_std, quiet_level, _slope(std, level, quiet_std, quiet_level))


def _slope(std: F32, level: F32, quiet_std: float, quiet_level: float) -> float:
    """Least-squares slope of the binned quiet variance against level, through the quiet
    point, within [0, quiet_std^2 / quiet_level] (the `FrameNoise` bound)."""
    n_bins = min(NOISE_LEVEL_BINS, std.size // 8)
    if n_bins < 2 or quiet_level <= 0:
        return 0.0
    edges = np.quantile(level, np.linspace(0.0, 1.0, n_bins + 1))
    num = den = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (level >= lo) & (level <= hi)
        if inside.sum() < 4:
            continue
        dl = float(np.median(level[inside])) - quiet_level
        if dl <= 0:
            continue
        dv = float(np.quantile(std[inside], NOISE_BLOCK_QUANTILE)) ** 2 - quiet_std**2
        num, den = num + dv * dl, den + dl * dl
    if den <= 0:
        return 0.0
    return float(np.clip(num / den, 0.0, quiet_std**2 / quiet_level))


def immerkaer_std(gray01: ArrayLike) -> float:
    """Immerkaer's (1996) estimate as published: the mean residual over the whole frame
    (texture adds to it; the reblur baseline uses it, as its method does)."""
    resp = cv2.filter2D(_gray(gray01), cv2.CV_32F, IMMERKAER_KERNEL)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) / 6.0 * np.mean(np.abs(resp)))


def noise_variance_bound(window_px: int, z: float = 4.0) -> float:
    """How far above n^2 pure noise's local variance reaches in a window: z standard
    errors of the sample variance of window_px^2 pixels (sqrt(2 / N) relative), 1.38
    for 15 px, so a flat noisy region does not pass for texture by chance."""
    return 1.0 + z * math.sqrt(2.0 / (window_px * window_px))


def contrast_beyond_noise(
    local_std_: F32, local_mean: F32, noise: FrameNoise, window_px: int = 15
) -> F32:
    """sqrt(max(s^2 - b n^2, 0)) of a local std map s, n the noise at the local mean's
    brightness and b the chance bound above."""
    n = noise.std_at(local_mean)
    floor = np.float32(noise_variance_bound(window_px)) * n * n
    s = np.asarray(local_std_, dtype=np.float32)
    return np.asarray(np.sqrt(np.maximum(s * s - floor, 0.0)), dtype=np.float32)
