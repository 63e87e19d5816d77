"""Classical sharpness measures of a region: the curves a focus sweep plots.

Bottom layer (numpy + cv2 only), shared by the sweep recorder, the classical
estimation baselines and contrast autofocus. Each measure is larger when the
region is sharper and peaks at best focus; their absolute values depend on the
texture, so compare them only along one sweep of one region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from hdme_focus.core.roi import Roi

F32 = NDArray[np.float32]

# Filters below are 3x3; computing them on the ROI plus this margin keeps the
# values free of border effects wherever the frame allows.
_MARGIN_PX = 2


def _laplacian(gray: F32) -> F32:
    return np.asarray(cv2.Laplacian(gray, cv2.CV_32F, ksize=1), dtype=np.float32)


def _gradient_energy(gray: F32) -> F32:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(gx * gx + gy * gy, dtype=np.float32)


def variance_of_laplacian(gray: F32) -> float:
    """Variance of the 3x3 Laplacian (Pech-Pacheco et al. 2000)."""
    return float(_laplacian(gray).var())


def tenengrad(gray: F32) -> float:
    """Mean Sobel gradient energy Gx^2 + Gy^2 (Tenenbaum 1970), no threshold."""
    return float(_gradient_energy(gray).mean())


def normalised_variance(gray: F32) -> float:
    """Intensity variance over mean (Groen et al. 1985): insensitive to exposure."""
    mean = float(gray.mean())
    if mean <= 0.0:
        return 0.0
    return float(gray.var() / mean)


Measure = Callable[[F32], float]
MEASURES: dict[str, Measure] = {
    "lap_var": variance_of_laplacian,
    "tenengrad": tenengrad,
    "norm_var": normalised_variance,
}
DEFAULT_MEASURES: tuple[str, ...] = tuple(MEASURES)
# Filter measures: (filter, reduction) evaluated on the margin-padded patch and
# cropped to the ROI, so pixels at the ROI edge see their real neighbours.
_FILTERED: dict[str, tuple[Callable[[F32], F32], Callable[[F32], float]]] = {
    "lap_var": (_laplacian, lambda a: float(a.var())),
    "tenengrad": (_gradient_energy, lambda a: float(a.mean())),
}


def check_measures(names: Sequence[str]) -> tuple[str, ...]:
    """Validate measure names; ValueError naming the allowed ones."""
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise ValueError(
            f"unknown focus measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}"
        )
    return tuple(names)


def focus_measures(
    gray: ArrayLike, roi: Roi | None = None, measures: Sequence[str] = DEFAULT_MEASURES
) -> dict[str, float]:
    """Named sharpness measures of one region of a gray image (any dtype, HxW)."""
    check_measures(measures)
    img = np.asarray(gray, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"focus measures need a 2-D gray image, got shape {img.shape}")
    height, width = img.shape
    if roi is None:
        roi = Roi(0, 0, width, height)
    roi.check_inside(width, height)
    x0, y0 = max(0, roi.x - _MARGIN_PX), max(0, roi.y - _MARGIN_PX)
    x1, y1 = min(width, roi.x + roi.w + _MARGIN_PX), min(height, roi.y + roi.h + _MARGIN_PX)
    padded = np.ascontiguousarray(img[y0:y1, x0:x1])
    inner = Roi(roi.x - x0, roi.y - y0, roi.w, roi.h)

    out: dict[str, float] = {}
    for name in measures:
        if name in _FILTERED:
            filt, reduce = _FILTERED[name]
            out[name] = reduce(inner.slice(filt(padded)))
        else:
            out[name] = MEASURES[name](roi.slice(img))
    return out


def best_index(values: Sequence[float] | NDArray[np.float64]) -> int:
    """Index of the sharpest sample, ignoring NaN; -1 when there is none."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or not np.any(np.isfinite(arr)):
        return -1
    return int(np.nanargmax(arr))


def normalise_curve(values: ArrayLike) -> NDArray[np.float64]:
    """Scale a curve to its maximum (1 at best focus), as the sweep plot shows it."""
    arr = np.asarray(values, dtype=np.float64)
    peak = np.nanmax(arr) if arr.size and np.any(np.isfinite(arr)) else np.nan
    if not np.isfinite(peak) or peak <= 0:
        return np.full_like(arr, np.nan)
    return arr / peak


__all__ = [
    "DEFAULT_MEASURES",
    "MEASURES",
    "best_index",
    "check_measures",
    "focus_measures",
    "normalise_curve",
    "normalised_variance",
    "tenengrad",
    "variance_of_laplacian",
]
