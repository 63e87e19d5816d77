"""Defocus-map error metrics: the paper's normalised errors plus the depth-estimation set.

Absolute errors: MSE and MAE of sigma / sigma_max (HDME-Net's normalisation),
MAE and RMSE in pixels. Relative errors (AbsRel, SqRel, RMSElog, delta < 1.25^k)
divide by the true sigma, which is 0 for in-focus pixels, so both prediction and
truth are floored at RELATIVE_FLOOR_PX (0.5 px) before any ratio or log: below
half a pixel blur is not measurable anyway, and one in-focus pixel would
otherwise dominate the mean.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

RELATIVE_FLOOR_PX = 0.5
DELTA_BASE = 1.25
METRIC_NAMES: tuple[str, ...] = (
    "mse_norm",
    "mae_norm",
    "mae_px",
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "delta1",
    "delta2",
    "delta3",
)


def _valid(pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None) -> tuple[Any, Any]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    ok = np.isfinite(p) & np.isfinite(t)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != p.shape:
            raise ValueError(f"mask shape {m.shape} differs from prediction shape {p.shape}")
        ok &= m
    return p[ok], t[ok]


def defocus_metrics(
    pred_px: ArrayLike,
    true_px: ArrayLike,
    sigma_max_px: float = 10.0,
    mask: ArrayLike | None = None,
) -> dict[str, float]:
    """All metrics over the finite (and masked-in) pixels; NaN values when none are left.

    Also returns n_pixels. rmse is in pixels; delta_k is the share of pixels with
    max(p/t, t/p) < 1.25^k (higher is better).
    """
    p, t = _valid(pred_px, true_px, mask)
    out: dict[str, float] = {"n_pixels": float(p.size)}
    if p.size == 0:
        out.update(dict.fromkeys(METRIC_NAMES, float("nan")))
        return out
    err = p - t
    out["mse_norm"] = float(np.mean((err / sigma_max_px) ** 2))
    out["mae_norm"] = float(np.mean(np.abs(err)) / sigma_max_px)
    out["mae_px"] = float(np.mean(np.abs(err)))
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    pf = np.maximum(p, RELATIVE_FLOOR_PX)
    tf = np.maximum(t, RELATIVE_FLOOR_PX)
    out["abs_rel"] = float(np.mean(np.abs(pf - tf) / tf))
    out["sq_rel"] = float(np.mean((pf - tf) ** 2 / tf))
    out["rmse_log"] = float(np.sqrt(np.mean((np.log(pf) - np.log(tf)) ** 2)))
    ratio = np.maximum(pf / tf, tf / pf)
    for k in (1, 2, 3):
        out[f"delta{k}"] = float(np.mean(ratio < DELTA_BASE**k))
    return out


def metrics_by_bin(
    pred: ArrayLike,
    true: ArrayLike,
    bins_px: Sequence[float] = (0, 1, 2, 4, 6, 8, 10),
    sigma_max_px: float = 10.0,
    mask: ArrayLike | None = None,
) -> list[dict[str, float]]:
    """Metrics per true-sigma bin [lo, hi) (the last bin includes hi), with bin edges."""
    t = np.asarray(true, dtype=np.float64)
    base = np.ones(t.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    rows: list[dict[str, float]] = []
    edges = list(bins_px)
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        last = i == len(edges) - 2
        sel = base & (t >= lo) & ((t <= hi) if last else (t < hi))
        row = {"bin_lo_px": float(lo), "bin_hi_px": float(hi)}
        row.update(defocus_metrics(pred, t, sigma_max_px, sel))
        rows.append(row)
    return rows
