"""Classical defocus estimators behind the same API as HDME-Net, as references.

ReblurEstimator: Zhuo & Sim (2011), "Defocus map estimation from a single
image". At a step edge blurred by sigma, re-blurring by sigma0 divides the
gradient magnitude by R = sqrt(sigma^2 + sigma0^2) / sigma, so
sigma = sigma0 / sqrt(R^2 - 1). Measured at Canny edges, then propagated.
Changes from the paper, each for speed or noise: the frame is pre-smoothed by
`presmooth_px` (subtracted again in quadrature) and edges must stand
`edge_snr` times above the estimated sensor noise, else noise edges read as
sharp; propagation is normalised Gaussian convolution (fine scale, then 4x
coarser where edges are sparse, then the median) instead of matting Laplacian
interpolation, which is minutes per megapixel. Where no edge survives at all
the frame is reported fully blurred (sigma_max).

FocusMeasureEstimator: local band energies (a 3x3 second-difference high-pass,
Sobel gradient energy, and gradient energy after re-blurs of 1, 2.5 and 5 px)
over a Gaussian window, fitted per pixel to "white texture blurred by sigma +
white sensor noise". The band responses are calibrated once on synthetic white
noise through the same filters, so the mapping from energies to sigma is exact
for shuffled (spatial-aliasing) textures; sensor noise is assumed below
`noise_max` of full scale, which separates sharp texture from noise. It is a
focus-measure ratio (gradient energy before/after a known re-blur) made robust
to noise by the extra bands.

Both take the estimator interface's `downscale` (from `base.GrayEstimator`), so
calibration fits their coarse curve too, and report the texture heuristic as
confidence.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from hdme_focus import render
from hdme_focus.core.frame import F32
from hdme_focus.estimation.base import GrayEstimator
from hdme_focus.estimation.noise import IMMERKAER_KERNEL, immerkaer_std

BASELINES: tuple[str, ...] = ("reblur", "focus-measure")  # registry names of the classes below


def _gradient_energy(g: F32) -> F32:
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    return np.asarray(gx * gx + gy * gy, dtype=np.float32)


@lru_cache(maxsize=8)
def _white_gradient_rms(presmooth_px: float) -> float:
    """RMS Sobel gradient magnitude of unit white noise after the pre-smoothing."""
    noise = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    energy = _gradient_energy(render.blur_uniform(noise, presmooth_px))[8:-8, 8:-8]
    return float(np.sqrt(energy.mean()))


class ReblurEstimator(GrayEstimator):
    """Zhuo & Sim (2011) edge re-blur ratio, densified by normalised convolution."""

    name = "reblur"

    def __init__(
        self,
        sigma_max_px: float = 10.0,
        reblur_px: float = 1.0,
        presmooth_px: float = 2.0,
        edge_snr: float = 3.0,
        propagate_px: float = 6.0,
    ) -> None:
        self.sigma_max_px = sigma_max_px
        self.reblur_px = reblur_px
        self.presmooth_px = presmooth_px
        self.edge_snr = edge_snr
        self.propagate_px = propagate_px

    def sparse(self, gray01: F32) -> tuple[F32, NDArray[np.bool_]]:
        """Sigma at edge pixels (and the edge mask); elsewhere undefined."""
        smooth = render.blur_uniform(gray01, self.presmooth_px)
        g0 = np.sqrt(_gradient_energy(smooth))
        g1 = np.sqrt(_gradient_energy(render.blur_uniform(smooth, self.reblur_px)))
        threshold = self.edge_snr * immerkaer_std(gray01) * _white_gradient_rms(self.presmooth_px)
        lo, hi = (float(v) for v in np.percentile(smooth, [0.5, 99.5]))
        scale = 255.0 / max(hi - lo, 1e-6)
        u8 = np.clip((smooth - lo) * scale, 0, 255).astype(np.uint8)
        t8 = max(threshold * scale, 1.0)
        edges = (cv2.Canny(u8, t8, 2.0 * t8, L2gradient=True) > 0) & (g0 > threshold)
        ratio = g0 / np.maximum(g1, 1e-12)
        sigma = np.full(gray01.shape, self.sigma_max_px, dtype=np.float32)
        measurable = edges & (ratio > 1.0 + 1e-6)
        total = self.reblur_px / np.sqrt(ratio[measurable] ** 2 - 1.0)
        sigma[measurable] = np.sqrt(np.maximum(total**2 - self.presmooth_px**2, 0.0))
        return np.clip(sigma, 0.0, self.sigma_max_px).astype(np.float32), edges

    def predict_gray(self, gray01: F32) -> F32:
        sigma, edges = self.sparse(gray01)
        if not edges.any():
            return np.full(gray01.shape, self.sigma_max_px, dtype=np.float32)
        weight = edges.astype(np.float32)
        out = np.full(gray01.shape, float(np.median(sigma[edges])), dtype=np.float32)
        for scale in (4.0 * self.propagate_px, self.propagate_px):  # coarse first, fine on top
            num = render.blur_uniform(sigma * weight, scale)
            den = render.blur_uniform(weight, scale)
            ok = den > 1e-3
            out[ok] = num[ok] / den[ok]
        return np.clip(out, 0.0, self.sigma_max_px).astype(np.float32)


@lru_cache(maxsize=8)
def _band_calibration(
    reblur_px: tuple[float, ...], grid_px: tuple[float, ...]
) -> NDArray[np.float64]:
    """Band energy per unit variance of white noise blurred by each grid sigma: [S, B]."""
    noise = np.random.default_rng(0).standard_normal((320, 320)).astype(np.float32)
    rows = []
    for s in grid_px:
        bands = _bands(render.blur_uniform(noise, s), reblur_px)
        rows.append([float(b[40:-40, 40:-40].mean()) for b in bands])
    return np.asarray(rows, dtype=np.float64)


def _bands(g: F32, reblur_px: tuple[float, ...]) -> list[F32]:
    high = cv2.filter2D(g, cv2.CV_32F, IMMERKAER_KERNEL, borderType=cv2.BORDER_REFLECT_101)
    out = [np.asarray(high * high, dtype=np.float32), _gradient_energy(g)]
    out += [_gradient_energy(render.blur_uniform(g, s)) for s in reblur_px]
    return out


class FocusMeasureEstimator(GrayEstimator):
    """Local multi-band focus measure fitted to a calibrated blur + noise model."""

    name = "focus-measure"

    def __init__(
        self,
        sigma_max_px: float = 10.0,
        window_px: float = 6.0,
        reblur_px: tuple[float, ...] = (1.0, 2.5, 5.0),
        noise_max: float = 0.025,
        stride_px: int = 4,
    ) -> None:
        self.sigma_max_px = sigma_max_px
        self.window_px = window_px
        self.reblur_px = tuple(reblur_px)
        self.noise_max = noise_max
        self.stride_px = max(1, int(stride_px))
        top = 1.4 * sigma_max_px
        self.grid_px = (0.0, *np.geomspace(0.2, top, 56).round(4).tolist())

    def predict_gray(self, gray01: F32) -> F32:
        h, w = gray01.shape
        small = (max(1, w // self.stride_px), max(1, h // self.stride_px))
        energies = [
            cv2.resize(render.blur_uniform(b, self.window_px), small, interpolation=cv2.INTER_AREA)
            for b in _bands(gray01, self.reblur_px)
        ]
        fit = self._fit(np.stack([e.ravel() for e in energies]).astype(np.float64))
        sigma = cv2.resize(fit.reshape(small[1], small[0]), (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(sigma, 0.0, self.sigma_max_px).astype(np.float32)

    def _fit(self, e: NDArray[np.float64]) -> F32:
        """Per column of band energies e [B, N]: the grid sigma with the least relative residual.

        For each candidate sigma the texture variance v >= 0 and noise variance
        0 <= n <= noise_max^2 follow from weighted least squares; ties go to the
        larger sigma (a frame too flat to tell is most likely strongly blurred).
        """
        table = _band_calibration(self.reblur_px, self.grid_px)
        noise_resp = table[0]  # unblurred white noise
        wgt = 1.0 / np.maximum(e, 1e-20)
        n_max = self.noise_max**2
        best = np.full(e.shape[1], np.inf)
        best_sigma = np.zeros(e.shape[1], dtype=np.float32)
        a22 = (wgt * noise_resp[:, None] ** 2).sum(0)
        b2 = (wgt * noise_resp[:, None] * e).sum(0)
        for tex_resp, sigma in zip(table, self.grid_px, strict=True):
            t = tex_resp[:, None]
            a11 = (wgt * t**2).sum(0)
            a12 = (wgt * t * noise_resp[:, None]).sum(0)
            b1 = (wgt * t * e).sum(0)
            det = a11 * a22 - a12**2
            with np.errstate(over="ignore"):  # near-singular pixels: discarded by the where
                n = np.where(
                    det > 1e-12 * a11 * a22, (a11 * b2 - a12 * b1) / np.maximum(det, 1e-300), 0
                )
            n = np.clip(n, 0.0, n_max)
            v = np.maximum((b1 - a12 * n) / a11, 0.0)
            resid = e - t * v - noise_resp[:, None] * n
            r = (wgt * resid * resid).sum(0)
            better = r <= best
            best[better] = r[better]
            best_sigma[better] = sigma
        return best_sigma
