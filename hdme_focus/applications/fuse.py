"""Multi-focus fusion of a sweep: one all-in-focus image and a depth-from-focus map.

method "hdme": each frame's defocus map from an estimator (any, see the
registry). Image: per pixel and per scale the least-blurred frame, i.e. a
Laplacian-pyramid fusion (Burt & Adelson 1985) whose selection at level l is
the arg-min over frames of the sigma maps reduced to that level; the
multi-resolution blend is what keeps seams and halos out (measured better than
one-hot weights refined by the guided filter, Li, Kang & Hu 2013, which stays
available as blend="guided"; see docs/benchmarks/fusion.md). Depth: the maps
refined with each frame as the guide (so they follow that frame's edges), the
arg-min frame per pixel, made sub-frame by the vertex of the parabola through
sigma^2 of the best frame and its neighbours (sigma^2 is quadratic in focus
position).

method "classical": the same pyramid fusion with the usual rule, the frame with
the most local coefficient energy at each level; its depth is the arg-max of a
local Laplacian-energy focus measure.

Both give the depth as a frame index and, where the sweep recorded positions,
as a stage position (linear between frames), with a 0..1 confidence.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from hdme_focus.applications.align import Alignment, align_stack, identity_alignment
from hdme_focus.applications.stack import FocusStack
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32, to_gray_float
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.estimation.refine import refine_sigma_map

Method = Literal["hdme", "classical"]
METHODS: tuple[str, ...] = ("hdme", "classical")
BLENDS: tuple[str, ...] = ("pyramid", "guided")

WEIGHT_RADIUS_PX = 4  # selection weights blend over ~9 px where the image is smooth
WEIGHT_EPS = 1e-4
SIGMA_RADIUS_PX = 8
FOCUS_WINDOW_PX = 4.0  # classical focus measure: Gaussian window of the Laplacian energy
PYRAMID_MIN_PX = 8


@dataclass(frozen=True)
class FusionResult:
    """All-in-focus image (like the inputs: HxW or HxWx3, 0..1) and depth from focus."""

    fused01: F32
    depth_index: F32  # frame index (fractional) in sweep order
    confidence: F32  # 0..1
    method: str
    estimator: str | None = None
    depth_position_mm: F32 | None = None
    alignment: Alignment | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _parabola_offset(prev: F32, best: F32, nxt: F32) -> F32:
    """Vertex of the parabola through (-1, prev), (0, best), (1, nxt), clipped to +-0.5."""
    curv = prev - 2.0 * best + nxt
    off = np.where(np.abs(curv) > 1e-12, 0.5 * (prev - nxt) / np.where(curv == 0, 1, curv), 0.0)
    return np.clip(off, -0.5, 0.5).astype(np.float32)


def _take(stack: F32, pick: NDArray[np.intp]) -> F32:
    """stack[pick[y, x], y, x] for a [N, H, W] stack."""
    return np.asarray(np.take_along_axis(stack, pick[None], 0)[0], dtype=np.float32)


def _subframe_index(score: F32, pick: NDArray[np.intp]) -> F32:
    """Fractional index of the extremum of `score` [N, H, W] (minimum at `pick`)."""
    n = score.shape[0]
    lo = np.clip(pick - 1, 0, n - 1)
    hi = np.clip(pick + 1, 0, n - 1)
    off = _parabola_offset(_take(score, lo), _take(score, pick), _take(score, hi))
    off = np.where((pick == 0) | (pick == n - 1), 0.0, off)
    return (pick + off).astype(np.float32)


def _weights_from_index(index: F32, grays: Sequence[F32]) -> list[F32]:
    """One-hot selection of the nearest frame, refined with each frame as the guide."""
    pick = np.clip(np.rint(index), 0, len(grays) - 1).astype(np.intp)
    weights = []
    for i, guide in enumerate(grays):
        onehot = (pick == i).astype(np.float32)
        if not onehot.any():
            weights.append(onehot)
            continue
        refined = refine_sigma_map(onehot, guide, radius_px=WEIGHT_RADIUS_PX, eps=WEIGHT_EPS)
        weights.append(refined)
    total = np.maximum(np.sum(weights, axis=0), 1e-6)
    return [np.asarray(w / total, dtype=np.float32) for w in weights]


def _blend(images: Sequence[F32], weights: Sequence[F32]) -> F32:
    out = np.zeros_like(images[0])
    for im, w in zip(images, weights, strict=True):
        out += im * (w[..., None] if im.ndim == 3 else w)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _gaussian_pyramid(image: F32, levels: int) -> list[F32]:
    pyr = [image]
    for _ in range(levels - 1):
        pyr.append(np.asarray(cv2.pyrDown(pyr[-1]), dtype=np.float32))
    return pyr


def _laplacian_pyramid(image: F32, levels: int) -> list[F32]:
    gauss = _gaussian_pyramid(image, levels)
    pyr = [
        np.asarray(fine - cv2.pyrUp(coarse, dstsize=(fine.shape[1], fine.shape[0])), np.float32)
        for fine, coarse in itertools.pairwise(gauss)
    ]
    return [*pyr, gauss[-1]]


def _collapse(pyr: Sequence[F32]) -> F32:
    cur = pyr[-1]
    for lap in reversed(pyr[:-1]):
        cur = np.asarray(cv2.pyrUp(cur, dstsize=(lap.shape[1], lap.shape[0])) + lap, np.float32)
    return cur


def _levels(h: int, w: int) -> int:
    return max(1, int(np.floor(np.log2(min(h, w) / PYRAMID_MIN_PX))) + 1)


def _pyramid_fuse(images: Sequence[F32], pick: Callable[[int], NDArray[np.intp]]) -> F32:
    """Laplacian-pyramid fusion: at each detail level the coefficients of frame pick(level)."""
    h, w = images[0].shape[:2]
    levels = _levels(h, w)
    pyrs = [_laplacian_pyramid(im, levels) for im in images]
    fused: list[F32] = []
    for lev in range(levels):
        coeffs = np.stack([p[lev] for p in pyrs])
        if lev == levels - 1:  # the coarsest level carries brightness, not focus: average
            fused.append(coeffs.mean(axis=0).astype(np.float32))
            continue
        k = pick(lev)
        sel = k[None, ..., None] if coeffs.ndim == 4 else k[None]
        fused.append(np.take_along_axis(coeffs, sel, 0)[0].astype(np.float32))
    return np.clip(_collapse(fused), 0.0, 1.0).astype(np.float32)


def _fuse_hdme(
    images: Sequence[F32], grays: Sequence[F32], estimator: DefocusEstimator, blend: str
) -> tuple[F32, F32, F32]:
    estimates = [estimator.estimate(g) for g in grays]
    raw = [e.sigma_px for e in estimates]
    # depth: each map follows its own frame's edges before frames are compared per pixel
    sigma = np.stack(
        [
            refine_sigma_map(e.sigma_px, g, radius_px=SIGMA_RADIUS_PX, confidence=e.confidence)
            for e, g in zip(estimates, grays, strict=True)
        ]
    ).astype(np.float32)
    conf = np.stack([e.confidence for e in estimates]).astype(np.float32)
    best_frame = np.argmin(sigma, axis=0)
    index = _subframe_index(sigma * sigma, best_frame)  # sigma^2 is quadratic in focus position
    best = _take(sigma, best_frame)
    mean = sigma.mean(axis=0)  # a clear minimum along the sweep: mean blur well above the least
    contrast = np.clip((mean - best) / (mean + 0.5), 0.0, 1.0)
    confidence = (contrast * _take(conf, best_frame)).astype(np.float32)
    if blend == "guided":
        return _blend(images, _weights_from_index(index, grays)), index, confidence
    # image: the least-blurred frame at every scale, blur read from the unrefined maps
    # (a map refined to one frame's edges hides the halo its blurred neighbours cast)
    h, w = grays[0].shape
    sigma_pyrs = [_gaussian_pyramid(s, _levels(h, w)) for s in raw]
    fused = _pyramid_fuse(
        images, lambda lev: np.argmin(np.stack([p[lev] for p in sigma_pyrs]), axis=0)
    )
    return fused, index, confidence


# --------------------------------------------------------------------------- classical


def _focus_energy(gray: F32) -> F32:
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=3)
    return np.asarray(cv2.GaussianBlur(lap * lap, (0, 0), FOCUS_WINDOW_PX), dtype=np.float32)


def _fuse_classical(images: Sequence[F32], grays: Sequence[F32]) -> tuple[F32, F32, F32]:
    h, w = grays[0].shape
    gray_pyrs = [_laplacian_pyramid(g, _levels(h, w)) for g in grays]

    def most_energy(lev: int) -> NDArray[np.intp]:
        energy = np.stack([cv2.blur(p[lev] * p[lev], (5, 5)) for p in gray_pyrs])
        return np.asarray(np.argmax(energy, axis=0), dtype=np.intp)

    fused = _pyramid_fuse(images, most_energy)
    measure = np.stack([_focus_energy(g) for g in grays])
    pick_fm = np.argmax(measure, axis=0)
    index = _subframe_index(-measure, pick_fm)
    top = _take(measure, pick_fm)
    confidence = np.clip(1.0 - measure.mean(axis=0) / np.maximum(top, 1e-12), 0.0, 1.0)
    return fused, index, confidence.astype(np.float32)


# --------------------------------------------------------------------------- API


def fuse_stack(
    stack: FocusStack,
    method: str = "classical",
    estimator: DefocusEstimator | None = None,
    *,
    align: bool = True,
    blend: str = "pyramid",
) -> FusionResult:
    """All-in-focus image and depth from focus of a stack; frames aligned first unless told not."""
    if method not in METHODS:
        raise UsageError(f"fusion method {method!r}: choose one of {', '.join(METHODS)}")
    if blend not in BLENDS:
        raise UsageError(f"fusion blend {blend!r}: choose one of {', '.join(BLENDS)}")
    if method == "hdme" and estimator is None:
        raise UsageError("fusion method 'hdme' needs an estimator")
    grays = stack.grays01
    alignment = align_stack(grays) if align else identity_alignment(len(grays))
    images = alignment.warp_all(stack.images01)
    grays = [to_gray_float(im) for im in images] if align else grays
    if method == "hdme":
        assert estimator is not None
        fused, index, confidence = _fuse_hdme(images, grays, estimator, blend)
        name: str | None = str(estimator.name)
    else:
        fused, index, confidence = _fuse_classical(images, grays)
        name = None
    position = None
    if stack.positions_mm is not None:
        frames = np.arange(len(stack), dtype=np.float64)
        position = np.interp(index, frames, stack.positions_mm).astype(np.float32)
    return FusionResult(
        fused,
        index.astype(np.float32),
        confidence.astype(np.float32),
        method,
        name,
        position,
        alignment,
    )
