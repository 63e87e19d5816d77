"""Overlapping tiles for frames larger than the network's tile, blended without seams.

Plain numpy, so every inference runtime (torch, ONNX Runtime) tiles the same way.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray


def window(n: int, overlap: int, ramp_start: bool, ramp_end: bool) -> NDArray[np.float32]:
    """1-D blending weight: raised-cosine ramps of `overlap` px on sides that meet a neighbour."""
    w = np.ones(n, dtype=np.float32)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap)
    if ramp_start:
        w[:overlap] = ramp
    if ramp_end:
        w[n - overlap :] = np.minimum(w[n - overlap :], ramp[::-1])
    return w


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: evenly spread, the last tile flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    n = math.ceil((length - tile) / step) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]
