"""Register the frames of a focus sweep to one reference: shift and scale (affine), by ECC.

A real focus sweep changes magnification (focus breathing) and may drift, so
the same object sits at different pixels in different frames; fusing them
unaligned doubles edges. Each frame is registered to its neighbour towards the
reference frame (neighbours differ least in blur) with OpenCV's enhanced
correlation coefficient (Evangelidis & Psarakis 2008) on a reduced copy, and
the transforms are chained. ECC fits an affine warp; it is reduced to what a
focus sweep does, one scale and a shift (rotation and shear would only fit
noise), and a step that moves no corner by more than STILL_PX is taken as no
motion, so a still sweep is never resampled (resampling itself blurs). An
estimate that fails to converge or moves more than is plausible is replaced by
the identity and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from hdme_focus.core.frame import F32

F64 = NDArray[np.float64]

ALIGN_MAX_SIDE_PX = 512  # ECC runs on frames reduced to this size (speed; blur hides detail)
MAX_SCALE_CHANGE = 0.15  # neighbour frames differing more than 15 % in scale are not a sweep
MAX_SHIFT_FRACTION = 0.15  # ... or shifted by more than 15 % of the frame
STILL_PX = 0.25  # a step that moves no corner by more than this is registration noise: identity


@dataclass(frozen=True)
class Alignment:
    """Per frame the 2x3 affine that maps reference pixel coordinates into that frame."""

    matrices: tuple[F64, ...]
    reference_index: int
    failed: tuple[int, ...]  # frames whose registration failed and were left as they are
    registered: bool = True  # False: alignment was switched off

    def warp(self, index: int, image: F32) -> F32:
        """Frame `index` resampled onto the reference frame's pixel grid."""
        m = self.matrices[index]
        if np.allclose(m, _IDENTITY):
            return image
        h, w = image.shape[:2]
        out = cv2.warpAffine(
            np.ascontiguousarray(image),
            m,
            (w, h),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,  # bilinear would blur the detail
            borderMode=cv2.BORDER_REFLECT_101,
        )
        return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)  # cubic overshoots

    def warp_all(self, images: Sequence[F32]) -> list[F32]:
        return [self.warp(i, im) for i, im in enumerate(images)]

    def scales(self) -> list[float]:
        """Linear magnification of each frame relative to the reference (sqrt of |det|)."""
        return [float(np.sqrt(abs(np.linalg.det(m[:, :2])))) for m in self.matrices]


_IDENTITY = np.eye(2, 3, dtype=np.float64)


def _homog(m: F64) -> F64:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _register(template: F32, moving: F32) -> F64 | None:
    """Affine warp W with moving(W(x)) ~ template(x), or None when ECC fails or is implausible."""
    start = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
    try:
        mask = np.ones(template.shape, np.uint8)
        motion = cv2.MOTION_AFFINE
        _, warp = cv2.findTransformECC(template, moving, start, motion, criteria, mask, 5)
    except cv2.error:
        return None
    h, w = template.shape
    m = _scale_and_shift(np.asarray(warp, dtype=np.float64), w, h)
    scale = m[0, 0]
    shift = float(np.hypot(*(m @ [w / 2, h / 2, 1.0] - [w / 2, h / 2])))
    if abs(scale - 1.0) > MAX_SCALE_CHANGE or shift > MAX_SHIFT_FRACTION * max(h, w):
        return None
    return m


def _corners(w: float, h: float) -> F64:
    return np.array([[0.0, w, 0.0, w], [0.0, 0.0, h, h], [1.0, 1.0, 1.0, 1.0]])


def _scale_and_shift(affine: F64, w: int, h: int) -> F64:
    """The scale s and shift t with s p + t closest to the affine's image of the frame corners."""
    p = _corners(w, h)
    q = affine @ p
    pc = p[:2] - p[:2].mean(axis=1, keepdims=True)
    qc = q - q.mean(axis=1, keepdims=True)
    s = float((pc * qc).sum() / (pc * pc).sum())
    t = q.mean(axis=1) - s * p[:2].mean(axis=1)
    return np.array([[s, 0.0, t[0]], [0.0, s, t[1]]])


def _moves(m: F64, w: int, h: int) -> float:
    """Largest displacement of a frame corner under the warp, px."""
    p = _corners(w, h)
    return float(np.abs(m @ p - p[:2]).max())


def align_stack(grays01: Sequence[F32], reference_index: int | None = None) -> Alignment:
    """Affine registration of every frame to the reference (default: the middle frame)."""
    n = len(grays01)
    ref = n // 2 if reference_index is None else int(reference_index)
    h, w = grays01[0].shape
    s = min(1.0, ALIGN_MAX_SIDE_PX / max(h, w))
    size = (max(8, round(w * s)), max(8, round(h * s)))
    small = [
        np.asarray(cv2.resize(g, size, interpolation=cv2.INTER_AREA), dtype=np.float32)
        for g in grays01
    ]
    to_small = np.diag([s, s, 1.0])
    to_full = np.diag([1.0 / s, 1.0 / s, 1.0])
    full: list[F64] = [np.eye(3)] * n
    failed: list[int] = []
    # walk outwards from the reference; frame i registers to its neighbour j towards it
    order = [*range(ref - 1, -1, -1), *range(ref + 1, n)]
    for i in order:
        j = i + 1 if i < ref else i - 1
        m = _register(small[j], small[i])
        if m is None:
            failed.append(i)
        step = np.eye(3) if m is None else to_full @ _homog(m) @ to_small
        if _moves(step[:2], w, h) <= STILL_PX:
            step = np.eye(3)
        # ref(x) ~ j(W_jr x) ~ i(W_ij W_jr x)
        full[i] = step @ full[j]
    return Alignment(tuple(f[:2].copy() for f in full), ref, tuple(sorted(failed)))


def identity_alignment(n_frames: int) -> Alignment:
    """No registration (`--no-align`)."""
    return Alignment(tuple(_IDENTITY.copy() for _ in range(n_frames)), 0, (), registered=False)
