"""A focus sweep as one stack of frames: from a sweep directory or from image files.

Frames keep their colour (RGB order) and are scaled to float 0..1 by their
bit depth once, here; gray versions go through `core.frame.to_gray_float`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32, to_gray_float
from hdme_focus.records import MANIFEST, load_sweep, read_image

MIN_FRAMES = 2


class StackError(UsageError):
    """Inputs that do not form a focus stack; str() names the input and the fix."""


@dataclass(frozen=True)
class FocusStack:
    """Frames of one scene at different focus, in sweep order.

    images01: float32 0..1, HxW or HxWx3 (RGB). positions_mm: the stage
    position of each frame where the sweep recorded one, else None.
    """

    images01: tuple[F32, ...]
    sources: tuple[Path, ...]
    positions_mm: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if len(self.images01) < MIN_FRAMES:
            raise StackError(
                f"a focus stack needs at least {MIN_FRAMES} frames, got {len(self.images01)}; "
                "pass a sweep directory or several image files"
            )
        shape = self.images01[0].shape
        for image, source in zip(self.images01, self.sources, strict=True):
            if image.shape != shape:
                raise StackError(
                    f"{source}: {_size(image)} differs from {self.sources[0]} ({_size(shape)}); "
                    "every frame of a stack must have the same size and channels"
                )

    def __len__(self) -> int:
        return len(self.images01)

    @property
    def grays01(self) -> list[F32]:
        return [to_gray_float(im) for im in self.images01]


def _size(image_or_shape: Any) -> str:
    shape = getattr(image_or_shape, "shape", image_or_shape)
    chans = "" if len(shape) == 2 else f"x{shape[2]}"
    return f"{shape[1]}x{shape[0]}{chans} px"


def to_float01(image: NDArray[Any], bit_depth: int | None = None) -> F32:
    """Colour-preserving scale to 0..1: integers by 2^bit_depth - 1, floats as given.

    Alpha is dropped; a single-channel 3-D image becomes 2-D.
    """
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., :3]
    to_gray_float(arr, bit_depth)  # the one place that checks size, channels, finiteness
    out = arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        depth = bit_depth if bit_depth is not None else (8 if arr.dtype == np.uint8 else 16)
        out /= np.float32(2**depth - 1)
    return out


def read_image01(path: Path) -> tuple[F32, int]:
    """An image file as float 0..1 (RGB order for colour) and the bit depth it was stored with."""
    if path.is_dir():
        raise StackError(f"{path}: is a directory; give an image file (PNG, JPEG, TIFF)")
    if not path.is_file():
        raise StackError(f"{path}: no such file")
    pixels, bit_depth = read_image(path)
    if bit_depth is None:
        bit_depth = 8 if pixels.dtype == np.uint8 else 16
    return to_float01(pixels, bit_depth), bit_depth


def load_stack(inputs: Sequence[Path]) -> FocusStack:
    """One sweep directory (positions from its table), or two or more image files."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise StackError("no input: pass a sweep directory or two or more image files")
    if len(paths) == 1 and paths[0].is_dir():
        return _from_sweep(paths[0])
    images: list[F32] = []
    for path in paths:
        if path.is_dir():
            raise StackError(
                f"{path}: a directory among image files; pass one sweep directory alone, "
                "or only image files"
            )
        images.append(read_image01(path)[0])
    return FocusStack(tuple(images), tuple(paths))


def _from_sweep(directory: Path) -> FocusStack:
    if not (directory / MANIFEST).is_file():
        raise StackError(
            f"{directory}: not a sweep directory (no {MANIFEST}); pass the image files instead"
        )
    record = load_sweep(directory)
    frames = [record.read_frame(i) for i in range(len(record))]
    images = tuple(to_float01(f.image, f.bit_depth) for f in frames)
    positions = np.asarray(record.positions_mm, dtype=np.float64)
    known = positions if positions.size == len(frames) and np.all(np.isfinite(positions)) else None
    return FocusStack(images, record.frame_paths, known)
