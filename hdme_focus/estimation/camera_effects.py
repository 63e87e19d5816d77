"""What real cameras do to a frame after the optics, for training synthesis.

Gamma encoding, a Bayer mosaic with demosaicing, in-camera sharpening and JPEG
compression all change local image statistics without changing the optical
blur, so a sample keeps its sigma label while the network learns to read blur
through them. Each effect is drawn per sample with its own probability.

Also the widefield microscope's defocus PSF for training: scalar diffraction
of an apodised circular pupil, integrated radially (a Hankel transform with
J0), pixel-integrated, so its sigma is the second moment of what a pixel
sees. The evaluation renderer builds its widefield PSF differently (2-D FFT of
the pupil), so the benchmark does not share this code.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy import special

from hdme_focus.render import kernel_sigma_px

F32 = NDArray[np.float32]
PUPIL_TAPER = 0.3  # outer share of the pupil radius with a cos^2 amplitude roll-off
WIDEFIELD_CUTOFFS: tuple[float, ...] = (0.25, 0.3, 0.35, 0.4, 0.45)  # NA / lambda, cycles per px


class CameraEffects(BaseModel):
    """Probabilities and ranges of the in-camera processing drawn per sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    gamma_prob: float = Field(0.4, ge=0, le=1)
    gamma: tuple[float, float] = (1.8, 2.4)  # encoding exponent: out = in ** (1 / gamma)
    demosaic_prob: float = Field(0.25, ge=0, le=1)
    sharpen_prob: float = Field(0.2, ge=0, le=1)
    sharpen_amount: tuple[float, float] = (0.2, 1.0)
    sharpen_radius_px: tuple[float, float] = (0.5, 1.2)
    jpeg_prob: float = Field(0.3, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (75, 95)


def mosaic(linear: F32, rng: np.random.Generator) -> tuple[F32, tuple[float, float, float]]:
    """RGGB Bayer samples of a gray scene seen through per-channel gains (white balance)."""
    gains = tuple(float(g) for g in rng.uniform(0.5, 1.0, 3))
    out = np.empty_like(linear)
    out[0::2, 0::2] = linear[0::2, 0::2] * gains[0]
    out[0::2, 1::2] = linear[0::2, 1::2] * gains[1]
    out[1::2, 0::2] = linear[1::2, 0::2] * gains[1]
    out[1::2, 1::2] = linear[1::2, 1::2] * gains[2]
    return out, (gains[0], gains[1], gains[2])


def demosaic(raw: F32, gains: tuple[float, float, float]) -> F32:
    """Bilinear demosaic (OpenCV), white balance undone, back to gray (Rec. 601 weights)."""
    u16 = np.clip(np.round(raw * 65535.0), 0, 65535).astype(np.uint16)
    # OpenCV names a Bayer pattern by its second row: RGGB from the top-left is "BG"
    rgb = cv2.cvtColor(u16, cv2.COLOR_BayerBG2RGB).astype(np.float32) / 65535.0
    balanced: F32 = (rgb / np.asarray(gains, dtype=np.float32)).astype(np.float32)
    gray = balanced @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    out: F32 = np.clip(gray, 0.0, 1.0).astype(np.float32)
    return out


def sharpen(image: F32, amount: float, radius_px: float) -> F32:
    """Unsharp mask, as camera firmware applies it."""
    low = cv2.GaussianBlur(image, (0, 0), radius_px, borderType=cv2.BORDER_REFLECT_101)
    return np.clip(image + amount * (image - low), 0.0, 1.0).astype(np.float32)


def jpeg(image01: F32, quality: int) -> F32:
    """8-bit JPEG round trip."""
    u8 = np.clip(np.round(image01 * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if dec is None:
        raise RuntimeError("JPEG decoding failed")
    return (dec.astype(np.float32) / 255.0).astype(np.float32)


# --------------------------------------------------------------------------- widefield PSF


def _pupil(rho: NDArray[np.float64]) -> NDArray[np.float64]:
    edge = 1.0 - PUPIL_TAPER
    taper = np.cos(0.5 * np.pi * (rho - edge) / PUPIL_TAPER) ** 2
    return np.where(rho <= edge, 1.0, np.where(rho < 1.0, taper, 0.0))


def widefield_kernel_waves(defocus_waves: float, cutoff: float, half_px: int) -> F32:
    """(2 half + 1)^2 pixel-integrated PSF for W20 waves of defocus; sums to 1.

    Amplitude at radius r: integral over the pupil radius rho (cycles/px) of
    P(rho) exp(2 pi i W20 (rho / cutoff)^2) J0(2 pi rho r) rho d rho.
    """
    sub = 3
    ax = (np.arange(-half_px * sub, (half_px + 1) * sub) + 0.5) / sub - 0.5
    xx, yy = np.meshgrid(ax, ax)
    r = np.sqrt(xx * xx + yy * yy)
    r_1d = np.arange(0.0, float(r.max()) + 0.05, 0.02)  # the PSF is radial: integrate on a line
    rho = np.linspace(0.0, cutoff, 160)
    phase = np.exp(2j * np.pi * defocus_waves * (rho / cutoff) ** 2)
    w: NDArray[np.complex128] = _pupil(rho / cutoff) * phase * rho
    amp = special.j0(2 * np.pi * np.outer(r_1d, rho)) @ w
    inten = np.interp(r, r_1d, np.abs(amp) ** 2)
    n = 2 * half_px + 1
    k = inten.reshape(n, sub, n, sub).mean(axis=(1, 3))
    out: F32 = (k / k.sum()).astype(np.float32)
    return out


@lru_cache(maxsize=len(WIDEFIELD_CUTOFFS))
def _sigma_table(cutoff: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    waves = np.linspace(0.0, 12.0, 49)  # up to ~14 px at every cutoff
    sig = [kernel_sigma_px(widefield_kernel_waves(float(wv), cutoff, 40)) for wv in waves]
    return waves, np.maximum.accumulate(np.asarray(sig))


def widefield_min_sigma_px(cutoff: float) -> float:
    return float(_sigma_table(cutoff)[1][0])


@lru_cache(maxsize=4096)
def widefield_kernel(sigma_px: float, cutoff: float) -> F32:
    """Kernel whose second-moment sigma is sigma_px (>= the in-focus sigma of this cutoff)."""
    waves, sig = _sigma_table(cutoff)
    wv = float(np.interp(sigma_px, sig, waves))
    return widefield_kernel_waves(wv, cutoff, max(3, math.ceil(4.0 * sigma_px + 3)))


def blur_by_levels(
    texture: F32, sigma_px: F32, cutoff: float, step_px: float = 0.1
) -> tuple[F32, F32]:
    """Widefield blur of a piecewise-constant sigma map: one convolution per sigma level.

    Returns the image and the sigma each pixel really got (the map rounded to its
    level and raised to the diffraction limit): the label to train on.
    """
    # levels: step_px apart up to 2 px, then 5 % apart (kernels are cached per level)
    fine = np.round(sigma_px / step_px) * step_px
    coarse = 2.0 * 1.05 ** np.round(np.log(np.maximum(sigma_px, 2.0) / 2.0) / np.log(1.05))
    q = np.maximum(np.where(sigma_px < 2.0, fine, coarse), widefield_min_sigma_px(cutoff))
    out = np.zeros_like(texture)
    label = np.zeros_like(texture)
    for level in np.unique(q):
        k = widefield_kernel(round(float(level), 4), cutoff)
        sel = q == level
        out[sel] = cv2.filter2D(texture, -1, k, borderType=cv2.BORDER_REFLECT_101)[sel]
        label[sel] = kernel_sigma_px(k)  # exact: the second moment of the kernel used
    return out, label
