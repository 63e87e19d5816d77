"""Result files of fuse, magnify and enhance: atomic, never over an input or another result.

Every file goes through `core.atomic` (temp file + rename). An output that
exists is refused unless overwrite is asked for; an output that is one of the
inputs is refused always.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from hdme_focus.applications.fuse import FusionResult
from hdme_focus.applications.stack import StackError
from hdme_focus.core.atomic import write_png_atomic, write_tiff_atomic
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32
from hdme_focus.render import quantize

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
FUSE_FILES = {
    "fused_tiff": "fused.tiff",
    "fused_png": "fused.png",
    "depth_index": "depth_index.tiff",
    "depth_mm": "depth_position_mm.tiff",
    "confidence": "depth_confidence.tiff",
    "depth_png": "depth.png",
}


class OutputExistsError(UsageError):
    """The output is already there (another run's result) and overwrite was not asked for."""


def check_outputs(outputs: Sequence[Path], inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse outputs that are inputs, or that exist without overwrite; writes nothing."""
    ins = {p.resolve() for p in inputs}
    for out in outputs:
        if out.resolve() in ins:
            raise UsageError(f"--out {out}: is one of the inputs; choose another output path")
        if out.exists() and not overwrite:
            raise OutputExistsError(
                f"--out: {out} exists (another result); choose another output or pass --overwrite"
            )
        if out.exists() and out.is_dir():
            raise UsageError(f"--out: {out} is a directory; give a file name")


def to_png_pixels(image01: F32, bit_depth: int = 8) -> NDArray[Any]:
    """8- or 16-bit PNG pixels (BGR order for colour, as OpenCV encodes)."""
    q = quantize(image01, 8 if bit_depth <= 8 else 16)
    return cv2.cvtColor(q, cv2.COLOR_RGB2BGR) if q.ndim == 3 else q


def write_image(
    path: Path, image01: F32, bit_depth: int, metadata: Mapping[str, Any] | None = None
) -> Path:
    """PNG (8/16 bit) or TIFF (the input's bit depth in uint8/uint16, metadata in JSON)."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise UsageError(
            f"--out {path}: unsupported image type {suffix or '(none)'}; use .png, .tif or .tiff"
        )
    if suffix == ".png":
        return write_png_atomic(path, to_png_pixels(image01, bit_depth))
    meta = {"bit_depth": bit_depth, **dict(metadata or {})}
    return write_tiff_atomic(path, quantize(image01, bit_depth), meta)


def _depth_png(index: F32, confidence: F32, n_frames: int) -> NDArray[np.uint8]:
    """Depth (frame index) colour-mapped near (first frame) to far, dimmed where unsure."""
    scaled = np.clip(index / max(n_frames - 1, 1), 0.0, 1.0)
    coloured = cv2.applyColorMap((255 * scaled).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    shade = 0.35 + 0.65 * np.clip(confidence, 0.0, 1.0)
    return np.asarray(coloured * shade[..., None], dtype=np.uint8)


def fusion_paths(out_dir: Path, with_positions: bool) -> dict[str, Path]:
    names = dict(FUSE_FILES)
    if not with_positions:
        names.pop("depth_mm")
    return {kind: out_dir / name for kind, name in names.items()}


def write_fusion(
    result: FusionResult,
    out_dir: Path,
    inputs: Sequence[Path],
    *,
    bit_depth: int = 16,
    overwrite: bool = False,
) -> dict[str, Path]:
    """fused.tiff/.png, depth_index.tiff (+ depth_position_mm.tiff), confidence, depth.png."""
    if out_dir.exists() and not out_dir.is_dir():
        raise StackError(f"--out {out_dir}: exists and is not a directory")
    paths = fusion_paths(out_dir, result.depth_position_mm is not None)
    check_outputs(list(paths.values()), inputs, overwrite)
    n = len(inputs)
    meta: dict[str, Any] = {
        "method": result.method,
        "estimator": result.estimator,
        "inputs": [str(p) for p in inputs],
        "aligned": result.alignment is not None and result.alignment.registered,
        **result.meta,
    }
    if result.alignment is not None:
        meta["frame_scales"] = [round(s, 6) for s in result.alignment.scales()]
        meta["alignment_failed"] = list(result.alignment.failed)
    write_tiff_atomic(
        paths["fused_tiff"], quantize(result.fused01, bit_depth), {**meta, "bit_depth": bit_depth}
    )
    write_png_atomic(paths["fused_png"], to_png_pixels(result.fused01, 8))
    write_tiff_atomic(paths["depth_index"], result.depth_index, {**meta, "quantity": "frame index"})
    if result.depth_position_mm is not None:
        write_tiff_atomic(
            paths["depth_mm"], result.depth_position_mm, {**meta, "quantity": "position_mm"}
        )
    write_tiff_atomic(paths["confidence"], result.confidence, {**meta, "quantity": "confidence"})
    write_png_atomic(paths["depth_png"], _depth_png(result.depth_index, result.confidence, n))
    return paths
