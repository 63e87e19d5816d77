"""Spatially varying defocus blur and sensor noise.

Shared by the simulated camera and by the training-data synthesis so that the
model is trained on exactly the physics the simulator renders.

Exact second moments: every kernel has exactly the variance its label says,
down to a tenth of a pixel, where a sampled Gaussian or a pixel-integrated disk
does not (cv2's sampled Gaussian of sigma 0.3 px is a 0.09 px blur, a disk of
radius 0.6 px no blur at all, and pixel integration widens every disk: by 0.15
px^2 at R = 2 px): the Gaussian is the discrete analogue of the Gaussian
(Lindeberg 1990: e^-t I_n(t), variance t = sigma^2), the disk is shrunk to at most its continuous
variance R^2 / 4 per axis and topped up with that Gaussian. The training labels
and the simulator's truth in the in-focus range depend on it.

Continuous blur: the image is blurred at a ladder of sigma levels and each pixel
is interpolated between its two neighbouring levels with weights chosen in
*variance* space, so the effective PSF has exactly the requested second moment
(sigma^2) for any real-valued sigma, not a rounded level.

Occlusion: `composite_layers` blends pre-multiplied layers far to near
(out = B(a L) + (1 - B(a)) out), so a sharp foreground edge stays sharp over a
blurred background instead of bleeding, as a per-pixel kernel lookup would.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

PSF = Literal["gaussian", "disk"]
F32 = NDArray[np.float32]


def disk_kernel(radius_px: float) -> F32:
    """Anti-aliased uniform disk (pillbox) of the given radius, summing to 1."""
    r = max(float(radius_px), 1e-6)
    half = math.ceil(r) + 1
    sub = 4  # supersampling per pixel for the anti-aliased edge
    ax = (np.arange(-half * sub, (half + 1) * sub) + 0.5) / sub - 0.5
    xx, yy = np.meshgrid(ax, ax)
    inside = (xx**2 + yy**2 <= r * r).astype(np.float32)
    k = inside.reshape(2 * half + 1, sub, 2 * half + 1, sub).mean(axis=(1, 3))
    if k.sum() <= 0:
        k[half, half] = 1.0
    return np.asarray(k / k.sum(), dtype=np.float32)


def _frozen(kernel: NDArray[np.floating]) -> F32:
    """A cached kernel is shared by every caller: read-only."""
    out = np.array(kernel, dtype=np.float32)
    out.setflags(write=False)
    return out


GAUSSIAN_TRUNCATE = 4.0  # kernel half-width in sigma (cv2's own for an 8 sigma + 1 kernel)
MIN_BLUR_PX = 1e-3  # below this a blur is the identity


@functools.lru_cache(maxsize=1024)
def gaussian_kernel_1d(sigma_px: float) -> F32:
    """Discrete Gaussian e^-t I_n(t), t = sigma^2: sums to 1, variance sigma^2 (to 0.1 %:
    cut at 4 sigma).

    From its transfer function exp(t (cos w - 1)) on a grid four times the kernel's
    width (numpy only: the simulator must not import scipy).
    """
    t = float(sigma_px) ** 2
    half = math.ceil(GAUSSIAN_TRUNCATE * sigma_px) + 1
    n = 1 << math.ceil(math.log2(4 * half + 8))
    h = np.fft.irfft(np.exp(t * (np.cos(2.0 * np.pi * np.arange(n // 2 + 1) / n) - 1.0)), n)
    k = np.concatenate([h[-half:], h[: half + 1]])
    return _frozen(k / k.sum())


def kernel_sigma_px(kernel: NDArray[np.floating]) -> float:
    """Per-axis second-moment sigma of a centred, square, odd-sized kernel (px)."""
    half = kernel.shape[0] // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    k = np.asarray(kernel, dtype=np.float64) / float(np.sum(kernel))
    return math.sqrt(float((k * (xx * xx + yy * yy)).sum()) / 2.0)


@functools.lru_cache(maxsize=256)  # up to ~30 kB each; the blur ladder needs a few dozen
def exact_disk_kernel(radius_px: float) -> F32:
    """A pillbox whose per-axis variance is exactly the continuous disk's, R^2 / 4.

    The anti-aliased disk is too wide by pixel integration, or all in one pixel
    when small: the largest disk not wider than R^2 / 4 (bisection on the radius)
    is convolved with the discrete Gaussian of the variance still missing.
    """
    target = float(radius_px) ** 2 / 4.0
    hi = float(radius_px)
    # pixel integration widens a disk by ~0.1-0.2 px^2: start the search just inside it
    lo = max(0.0, math.sqrt(max(hi * hi - 1.0 / 3.0, 0.0)) - 0.5)
    if kernel_sigma_px(disk_kernel(lo)) ** 2 > target:
        lo = 0.0
    for _ in range(16):
        mid = 0.5 * (lo + hi)
        if kernel_sigma_px(disk_kernel(mid)) ** 2 <= target:
            lo = mid
        else:
            hi = mid
    k = disk_kernel(lo)
    missing = target - kernel_sigma_px(k) ** 2
    if missing > 1e-9:
        g = gaussian_kernel_1d(math.sqrt(missing))
        padded = np.pad(k, g.size // 2).astype(np.float32)
        k = np.asarray(
            cv2.sepFilter2D(padded, -1, g, g, borderType=cv2.BORDER_CONSTANT), dtype=np.float32
        )
    return _frozen(k / k.sum())


def blur_uniform(image: ArrayLike, sigma_px: float, psf: PSF = "gaussian") -> F32:
    """Blur the whole image with one sigma (reflecting borders), exact second moment."""
    img = np.ascontiguousarray(image, dtype=np.float32)
    if sigma_px <= MIN_BLUR_PX:
        return img.copy()
    if psf == "gaussian":
        g = gaussian_kernel_1d(float(sigma_px))
        return np.asarray(
            cv2.sepFilter2D(img, -1, g, g, borderType=cv2.BORDER_REFLECT_101), dtype=np.float32
        )
    kernel = exact_disk_kernel(math.sqrt(2.0) * float(sigma_px))  # CoC radius R = sqrt(2) sigma
    return np.asarray(
        cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101), dtype=np.float32
    )


def sigma_levels(sigma_max_px: float, ratio: float = 1.12, fine_px: float = 0.25) -> F32:
    """Blur ladder: 0, then steps of fine_px up to 1 px, then geometric by `ratio`."""
    levels = [0.0]
    s = fine_px
    while s < min(1.0, sigma_max_px + fine_px):
        levels.append(s)
        s += fine_px
    s = max(levels[-1], fine_px)
    while levels[-1] < sigma_max_px:
        s *= ratio
        levels.append(s)
    return np.asarray(levels, dtype=np.float32)


def blur_spatially_varying(image: ArrayLike, sigma_map_px: ArrayLike, psf: PSF = "gaussian") -> F32:
    """Blur each pixel by its own continuous sigma (same shape as the image's plane).

    Works on HxW or HxWxC images; sigma_map is HxW (or a scalar).
    """
    img = np.asarray(image, dtype=np.float32)
    sig = np.broadcast_to(np.asarray(sigma_map_px, dtype=np.float32), img.shape[:2])
    if not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError("sigma map must be finite and non-negative")
    smax = float(sig.max())
    if smax - float(sig.min()) < 1e-4:
        return blur_uniform(img, smax, psf)
    levels = sigma_levels(smax)
    var = levels.astype(np.float64) ** 2
    idx = np.clip(np.searchsorted(levels, sig, side="right") - 1, 0, len(levels) - 2)
    lo_var = var[idx]
    hi_var = var[idx + 1]
    w_hi = np.clip((sig.astype(np.float64) ** 2 - lo_var) / (hi_var - lo_var), 0.0, 1.0)
    w_hi = w_hi.astype(np.float32)
    out = np.zeros_like(img, dtype=np.float32)
    colour = img.ndim == 3
    used = np.bincount(idx.ravel(), minlength=len(levels)) > 0
    used[1:] |= used[:-1]  # a level is needed as the upper neighbour too
    for i in np.flatnonzero(used):
        sel_lo = idx == i
        sel_hi = (idx + 1) == i
        blurred = blur_uniform(img, float(levels[i]), psf)
        weight = np.where(sel_lo, 1.0 - w_hi, 0.0) + np.where(sel_hi, w_hi, 0.0)
        w = weight.astype(np.float32)
        out += (w[..., None] if colour else w) * blurred
    return out


@dataclass(frozen=True)
class Layer:
    """A planar-ish scene layer: radiance, coverage (alpha) and its blur per pixel."""

    radiance: F32
    alpha: F32
    sigma_px: F32


def composite_layers(layers: Sequence[Layer], psf: PSF = "gaussian") -> F32:
    """Occlusion-aware defocus: blur pre-multiplied layers and blend far (first) to near."""
    if not layers:
        raise ValueError("no layers to render")
    out = np.zeros(layers[0].radiance.shape, dtype=np.float32)
    for layer in layers:
        a = np.clip(layer.alpha, 0.0, 1.0).astype(np.float32)
        if a.min() >= 1.0:  # opaque everywhere: hides all behind it, coverage blur is 1
            out = blur_spatially_varying(layer.radiance, layer.sigma_px, psf)
            continue
        premult = blur_spatially_varying(layer.radiance * a, layer.sigma_px, psf)
        cover = blur_spatially_varying(a, layer.sigma_px, psf)
        out = premult + (1.0 - np.clip(cover, 0.0, 1.0)) * out
    return out


def visible_sigma(layers: Sequence[Layer], threshold: float = 0.5) -> F32:
    """Ground-truth blur per pixel: the sigma of the nearest layer that covers it."""
    sig = np.zeros(layers[0].radiance.shape[:2], dtype=np.float32)
    for layer in layers:
        sel = layer.alpha >= threshold
        sig = np.where(sel, np.broadcast_to(layer.sigma_px, sig.shape), sig).astype(np.float32)
    return sig


# --------------------------------------------------------------------------- noise


def quantize(image01: ArrayLike, bit_depth: int) -> NDArray[np.uint16] | NDArray[np.uint8]:
    """Clip to [0, 1] and quantise to an integer frame of the given bit depth."""
    top = 2**bit_depth - 1
    q: NDArray[np.float64] = np.rint(np.clip(np.asarray(image01, dtype=np.float64), 0.0, 1.0) * top)
    if bit_depth <= 8:
        return q.astype(np.uint8)
    return q.astype(np.uint16)


def sensor_noise(
    radiance01: ArrayLike,
    rng: np.random.Generator,
    *,
    full_well_e: float = 10000.0,
    exposure_scale: float = 1.0,
    read_noise_e: float = 5.0,
) -> F32:
    """Poisson shot noise and Gaussian read noise; returns signal in [0, 1] of full well.

    radiance01 * exposure_scale is the expected fraction of the full well; values
    above 1 saturate once clipped by `quantize`.
    """
    expected_e = np.clip(np.asarray(radiance01, dtype=np.float64), 0.0, None) * (
        exposure_scale * full_well_e
    )
    electrons = rng.poisson(expected_e).astype(np.float64)
    if read_noise_e > 0:
        electrons += rng.normal(0.0, read_noise_e, size=electrons.shape)
    return (electrons / full_well_e).astype(np.float32)


def salt_and_pepper(image01: ArrayLike, fraction: float, rng: np.random.Generator) -> F32:
    """Set a fraction of pixels to 0 or 1 (dead and hot pixels, impulse noise)."""
    img = np.array(image01, dtype=np.float32, copy=True)
    if fraction <= 0:
        return img
    mask = rng.random(img.shape[:2]) < fraction
    vals = (rng.random(int(mask.sum())) < 0.5).astype(np.float32)
    img[mask] = vals[:, None] if img.ndim == 3 else vals
    return img
