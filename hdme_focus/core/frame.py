"""A captured frame and the one conversion of any image to gray float in [0, 1].

Gray conversion lives here once: cameras, estimators, focus measures and the sweep
all read pixels through `to_gray_float`, so a frame is never converted twice with
different weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hdme_focus.core.errors import UsageError

F32 = NDArray[np.float32]

LUMA_WEIGHTS_RGB = (0.299, 0.587, 0.114)
MIN_ESTIMABLE_PX = 8


class ImageInputError(UsageError):
    """An image that cannot be used (empty, wrong shape, non-finite); str() is user-facing."""


def to_gray_float(image: ArrayLike, bit_depth: int | None = None) -> F32:
    """Gray float32 in [0, 1]: uint8 / 255, uint16 / (2^bit_depth - 1), floats as given.

    RGB(A) is converted with luminance weights (channel order R, G, B). Raises
    ImageInputError on empty, tiny or non-finite input.
    """
    src = np.asarray(image)
    arr = src
    if arr.size == 0 or arr.ndim not in (2, 3):
        raise ImageInputError(f"expected a 2-D gray or 3-D colour image, got shape {arr.shape}")
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif arr.shape[2] in (3, 4):
            arr = arr[..., :3].astype(np.float32) @ np.array(LUMA_WEIGHTS_RGB, dtype=np.float32)
        else:
            raise ImageInputError(f"expected 1, 3 or 4 channels, got {arr.shape[2]}")
    out = np.asarray(arr, dtype=np.float32)
    if np.issubdtype(src.dtype, np.integer):
        if bit_depth is None:
            bit_depth = 8 if src.dtype == np.uint8 else 16
        out = out / np.float32(2**bit_depth - 1)
    if not np.all(np.isfinite(out)):
        raise ImageInputError(
            "image contains NaN or infinite values; fix the source or mask them before estimating"
        )
    if min(out.shape) < MIN_ESTIMABLE_PX:
        raise ImageInputError(
            f"image is {out.shape[1]}x{out.shape[0]} px, too small to estimate defocus "
            f"(at least {MIN_ESTIMABLE_PX}x{MIN_ESTIMABLE_PX} px)"
        )
    return out


def saturation_mask(gray01: ArrayLike, level: float = 0.995) -> NDArray[np.bool_]:
    """Pixels at or above the clipping level, whose blur cannot be trusted."""
    return np.asarray(np.asarray(gray01) >= level)


@dataclass(frozen=True)
class Frame:
    """One captured image and where and when it was taken."""

    image: NDArray[Any]
    exposure_ms: float
    timestamp_s: float
    position_mm: float = math.nan
    bit_depth: int = 8
    meta: dict[str, Any] = field(default_factory=dict)

    def as_float(self) -> F32:
        """Gray image scaled to [0, 1] by the bit depth."""
        return to_gray_float(self.image, self.bit_depth)
