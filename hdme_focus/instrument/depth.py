"""Depth from one frame: sigma map -> distance to the focal plane -> object distance.

Blur is unsigned, so one frame cannot tell nearer from farther than the
focused plane; the caller states which (`side`): "near" puts every pixel
nearer to the lens than the focused plane, "far" beyond it. With that
assumption each pixel's blur gives the stage position that would focus it
(the calibration's k and sigma0) and then, through the thin lens, its object
distance u. Pixels with too little texture, clipped pixels and blur outside
the estimator's range are masked as not confident.

Outputs: float32 TIFFs (sigma_px, defocus_mm = |z - z0|, focus_position_mm,
object_distance_mm with NaN where not confident, confidence mask), a
colour-mapped PNG with colour bars in mm, and optionally an ASCII PLY point
cloud of the confident pixels.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray

from hdme_focus.calibration.fit import Side, focus_position_map_mm, object_distance_now_mm
from hdme_focus.calibration.model import Calibration
from hdme_focus.core.atomic import atomic_write, write_figure_atomic
from hdme_focus.core.frame import Frame, saturation_mask, to_gray_float
from hdme_focus.estimation.base import MIN_LEARNED_CONFIDENCE, DefocusEstimator, texture_mask
from hdme_focus.instrument.devices import Instrument

F32 = NDArray[np.float32]
SIDES: tuple[str, ...] = ("near", "far")
RANGE_FRACTION = 0.95  # blur above this share of the estimator's range is not trusted
MAX_PLY_POINTS = 250_000


@dataclass
class DepthMaps:
    """Per-pixel results of one frame (all HxW)."""

    position_mm: float
    side: str
    sigma_px: F32
    defocus_mm: F32  # |z - z0|
    focus_position_mm: F32  # stage position that would focus the pixel
    object_distance_mm: F32  # lens-to-object distance at the current stage position
    confident: NDArray[np.bool_]
    gray: F32
    device_time_s: float = 0.0
    compute_time_s: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        u = self.object_distance_mm[self.confident & np.isfinite(self.object_distance_mm)]
        d = self.defocus_mm[self.confident]

        def pct(a: NDArray[Any], q: float) -> float:
            return float(np.percentile(a, q)) if a.size else math.nan

        return {
            "position_mm": self.position_mm,
            "side": self.side,
            "confident_fraction": float(self.confident.mean()),
            "defocus_mm_median": pct(d, 50),
            "object_distance_mm_p5": pct(u, 5),
            "object_distance_mm_median": pct(u, 50),
            "object_distance_mm_p95": pct(u, 95),
            "device_time_s": self.device_time_s,
            "compute_time_s": self.compute_time_s,
            "files": dict(self.files),
        }


def depth_from_frame(
    frame: Frame,
    estimator: DefocusEstimator,
    calibration: Calibration,
    side: Side = "far",
    position_mm: float | None = None,
) -> DepthMaps:
    """All maps for one frame; `position_mm` defaults to the frame's recorded position."""
    if side not in SIDES:
        raise ValueError(f"side {side!r}: choose 'near' or 'far'")
    z = frame.position_mm if position_mm is None else float(position_mm)
    if not math.isfinite(z):
        raise ValueError("the frame carries no stage position; pass position_mm")
    gray = to_gray_float(frame.image, frame.bit_depth)
    estimate = estimator.estimate(frame.image, frame.bit_depth)
    sigma = np.asarray(estimate.sigma_px, dtype=np.float32)
    sigma0, saturation = calibration.sigma0_px, calibration.saturation_px
    k: NDArray[np.float64] | float = calibration.k_px_per_mm
    for _ in range(3):  # k depends (weakly) on where the pixel focuses; fixed point
        focus = focus_position_map_mm(sigma, z, k, sigma0, side, saturation)
        k = calibration.slope_at_px_per_mm(np.where(np.isfinite(focus), focus, z))
    defocus = np.abs(focus - z)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = object_distance_now_mm(calibration.lens(), focus, z)
    confident = texture_mask(gray) & ~saturation_mask(gray) & np.isfinite(sigma)
    if estimate.learned:  # the estimator's own error scale: pixels it cannot read are out
        confident &= estimate.confidence >= MIN_LEARNED_CONFIDENCE
    confident &= sigma < RANGE_FRACTION * estimator.sigma_max_px
    confident &= np.isfinite(u) & (u > 0)
    u_masked = np.where(confident, u, np.nan)
    return DepthMaps(
        position_mm=z,
        side=side,
        sigma_px=sigma,
        defocus_mm=defocus.astype(np.float32),
        focus_position_mm=focus.astype(np.float32),
        object_distance_mm=u_masked.astype(np.float32),
        confident=np.asarray(confident, dtype=bool),
        gray=gray,
    )


def measure_depth(
    instrument: Instrument,
    estimator: DefocusEstimator,
    calibration: Calibration,
    side: Side = "far",
) -> DepthMaps:
    """One capture (no motion) and its depth maps, with device and compute time."""
    t0 = instrument.clock.monotonic()
    frame = instrument.capture()
    device = instrument.clock.monotonic() - t0
    c0 = time.perf_counter()
    maps = depth_from_frame(frame, estimator, calibration, side, instrument.stage.position_mm())
    maps.device_time_s = device
    maps.compute_time_s = time.perf_counter() - c0
    return maps


# --------------------------------------------------------------------------- files


def _tiff(path: Path, data: NDArray[Any], description: str) -> str:
    atomic_write(
        path, lambda fh: tifffile.imwrite(fh, data, description=description, metadata=None)
    )
    return str(path)


def write_depth(
    maps: DepthMaps,
    out_dir: Path | str,
    *,
    ply: bool = False,
    calibration: Calibration | None = None,
) -> dict[str, str]:
    """TIFFs, PNG and (optionally) PLY into out_dir; returns {kind: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    note = f"stage {maps.position_mm:.4f} mm, side {maps.side}"
    files = {
        "sigma_px": _tiff(out / "sigma_px.tiff", maps.sigma_px, f"blur sigma (px); {note}"),
        "defocus_mm": _tiff(out / "defocus_mm.tiff", maps.defocus_mm, f"|z - z0| (mm); {note}"),
        "focus_position_mm": _tiff(
            out / "focus_position_mm.tiff", maps.focus_position_mm, f"stage focus (mm); {note}"
        ),
        "object_distance_mm": _tiff(
            out / "object_distance_mm.tiff",
            maps.object_distance_mm,
            f"object distance u (mm), NaN = not confident; {note}",
        ),
        "confidence": _tiff(
            out / "confidence.tiff", maps.confident.astype(np.uint8) * 255, "255 = confident"
        ),
    }
    files["png"] = str(plot_depth(maps, out / "depth.png"))
    if ply:
        if calibration is None:
            raise ValueError("a PLY point cloud needs the calibration's optics")
        files["ply"] = str(write_ply(maps, calibration, out / "depth.ply"))
    maps.files = files
    return files


def plot_depth(maps: DepthMaps, path: Path) -> Path:
    """Frame, |z - z0| and object distance, colour bars in mm; grey = not confident."""
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.9), dpi=100)
    axes = fig.subplots(1, 3)
    axes[0].imshow(maps.gray, cmap="gray")
    axes[0].set_title(f"frame at {maps.position_mm:.3f} mm")
    for ax, data, label in (
        (
            axes[1],
            np.where(maps.confident, maps.defocus_mm, np.nan),
            "distance to focal plane |z - z0| (mm)",
        ),
        (axes[2], maps.object_distance_mm, f"object distance u (mm), side = {maps.side}"),
    ):
        finite = data[np.isfinite(data)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        cmap = matplotlib.colormaps["turbo"].with_extremes(bad="0.6")
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=lo, vmax=max(hi, lo + 1e-6))
        ax.set_title(label, fontsize=9)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label("mm")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    write_figure_atomic(path, fig)
    return path


def write_ply(maps: DepthMaps, calibration: Calibration, path: Path) -> Path:
    """ASCII PLY of confident pixels: x, y lateral (mm, via magnification s/u), z = u (mm)."""
    lens = calibration.lens()
    h, w = maps.gray.shape
    ys, xs = np.nonzero(maps.confident)
    stride = max(1, math.ceil(math.sqrt(len(xs) / MAX_PLY_POINTS))) if len(xs) else 1
    keep = (ys % stride == 0) & (xs % stride == 0)
    ys, xs = ys[keep], xs[keep]
    u = maps.object_distance_mm[ys, xs].astype(np.float64)
    s = lens.sensor_distance_mm + (maps.position_mm if lens.setup == "image" else 0.0)
    pitch_mm = lens.pixel_pitch_um * 1e-3
    px = (xs - (w - 1) / 2.0) * pitch_mm * u / s
    py = -(ys - (h - 1) / 2.0) * pitch_mm * u / s
    grey = np.clip(maps.gray[ys, xs] * 255.0, 0, 255).astype(np.uint8)
    header = (
        "ply\nformat ascii 1.0\ncomment hdme-focus depth, millimetres\n"
        f"element vertex {len(u)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header"
    )
    table = np.column_stack([px, py, u, grey, grey, grey])
    fmt = ["%.4f"] * 3 + ["%d"] * 3
    atomic_write(path, lambda fh: np.savetxt(fh, table, fmt=fmt, header=header, comments=""))
    return path
