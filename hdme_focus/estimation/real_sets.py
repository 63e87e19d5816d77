"""Scores on the real frames in ../shared/data: a PCB focus sweep and a microscope defocus series.

Neither set has a blur ground truth, so each is scored by what a user relies on:

- pcb-focus-sweep (7 frames, index = focus position): per region, the estimated
  sigma should grow with the distance (in frames) from the frame where that
  region is sharpest. The sharpest frame comes from a classical, estimator-free
  reference (mean squared Laplacian, the focus-stacking criterion), so no
  estimator grades itself. Score: Spearman rank correlation of sigma with that
  distance, pooled over all (region, frame) pairs. Regions are read as
  autofocus reads them (`roi_reading`: a learned confidence gates pixels).
- flake-defocus (4 fields x ~11 signed defocus offsets, labels.csv): on the field
  with a flake, Spearman of the median sigma over the flake's box (FLAKE_ROI,
  every pixel: far from focus the blurred flake has too little contrast for the
  texture mask, and a reading that dissolves into noise must count) with
  |defocus|; beside it the box as autofocus reads it (gated), over the frames it
  reads, with how many it refuses; on the three nearly empty fields, whether the
  whole-frame reading is refused (no measurable texture) and its mean confidence.

The data is not part of the package: callers pass its folder, and `find_shared`
returns None when it is absent so tests skip cleanly.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import stats

from hdme_focus.core.frame import F32, to_gray_float
from hdme_focus.estimation.base import DefocusEstimate, RoiSigma, roi_reading
from hdme_focus.estimation.noise import frame_noise

PCB_DIR = "pcb-focus-sweep"
FLAKE_DIR = "flake-defocus"
FLAKE_FIELD = "ix000_iy000"
FLAKE_ROI = (680, 260, 480, 440)  # x, y, w, h (px) around the flake of FLAKE_FIELD
PCB_GRID = (4, 6)  # rows x columns of regions

EstimateFn = Callable[[F32], DefocusEstimate]
"""Gray frame in [0, 1] -> sigma map (px) and confidence (an estimator's `estimate`)."""


def find_shared(name: str, start: Path | None = None) -> Path | None:
    """../shared/data/<name> beside the checkout (or any parent), or None when absent."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        cand = parent / "shared" / "data" / name
        if cand.is_dir():
            return cand
    return None


def read_gray(path: Path) -> F32:
    raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR_RGB)
    if raw is None:
        raise FileNotFoundError(str(path))
    return to_gray_float(raw)


def regions(
    shape: tuple[int, int], grid: tuple[int, int] = PCB_GRID
) -> list[tuple[int, int, int, int]]:
    h, w = shape
    rows, cols = grid
    return [
        (c * w // cols, r * h // rows, w // cols, h // rows)
        for r in range(rows)
        for c in range(cols)
    ]


def laplacian_energy(gray01: F32) -> float:
    """Estimator-free sharpness of a region: mean squared Laplacian after light denoising."""
    g = cv2.GaussianBlur(gray01, (0, 0), 0.7)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=3)
    return float(np.mean(lap * lap))


@dataclass(frozen=True)
class PcbScore:
    spearman_pooled: float  # sigma vs |frame - sharpest frame| over all regions and frames
    spearman_median_region: float
    vmin_agree: float  # share of regions whose sigma minimum is the reference sharpest frame
    sigma_px: list[list[float]]  # [region][frame]
    focus_frame: list[int]


def score_pcb(folder: Path, estimate_fn: EstimateFn, grid: tuple[int, int] = PCB_GRID) -> PcbScore:
    frames = [read_gray(p) for p in sorted(folder.glob("pcb_*.jpg"))]
    if len(frames) < 3:
        raise FileNotFoundError(f"{folder}: expected the pcb_00N.jpg sweep")
    boxes = regions(frames[0].shape, grid)
    sharp = np.array(
        [[laplacian_energy(f[y : y + h, x : x + w]) for f in frames] for x, y, w, h in boxes]
    )
    focus = sharp.argmax(axis=1)
    sig = np.full((len(boxes), len(frames)), np.nan)
    for j, f in enumerate(frames):
        est = estimate_fn(f)
        noise = frame_noise(f)
        for i, box in enumerate(boxes):
            sig[i, j] = roi_reading(est, f, box, noise).sigma_px  # as autofocus reads a region
    dist = np.abs(np.arange(len(frames))[None, :] - focus[:, None]).astype(float)
    ok = np.isfinite(sig)
    pooled = float(stats.spearmanr(sig[ok], dist[ok]).statistic) if ok.sum() > 2 else float("nan")
    per = []
    for i in range(len(boxes)):
        if ok[i].sum() > 2 and np.ptp(sig[i][ok[i]]) > 0:
            per.append(float(stats.spearmanr(sig[i][ok[i]], dist[i][ok[i]]).statistic))
    vmin = np.array([np.nanargmin(s) if np.isfinite(s).any() else -1 for s in sig])
    return PcbScore(
        pooled,
        float(np.median(per)) if per else float("nan"),
        float(np.mean(vmin == focus)),
        sig.round(4).tolist(),
        focus.astype(int).tolist(),
    )


@dataclass(frozen=True)
class FlakeFrame:
    tile: str
    defocus_um: float
    reading: RoiSigma  # whole frame, texture-masked, with the estimator's confidence
    flake_sigma_px: float  # median over FLAKE_ROI, every pixel
    flake_reading: RoiSigma  # FLAKE_ROI as autofocus reads it (NaN where it refuses)


def flake_labels(folder: Path) -> list[tuple[str, str, float]]:
    with (folder / "labels.csv").open(newline="") as fh:
        return [(r["file"], r["tile"], float(r["defocus_um"])) for r in csv.DictReader(fh)]


def read_flake(
    folder: Path, estimate_fn: EstimateFn, tiles: tuple[str, ...] | None = None
) -> list[FlakeFrame]:
    """Each frame's whole-field reading, with the estimator's confidence (as autofocus reads)."""
    out = []
    for name, tile, defocus in flake_labels(folder):
        if tiles is not None and tile not in tiles:
            continue
        g = read_gray(folder / name)
        est = estimate_fn(g)
        x, y, w, h = FLAKE_ROI
        flake = float(np.median(est.sigma_px[y : y + h, x : x + w]))
        noise = frame_noise(g)
        reading = roi_reading(est, g, noise=noise)
        box = roi_reading(est, g, FLAKE_ROI, noise)
        out.append(FlakeFrame(tile, defocus, reading, flake, box))
    return out


@dataclass(frozen=True)
class FlakeScore:
    spearman_field: float  # flake field: sigma vs |defocus|
    field_sigma_px: list[tuple[float, float]]  # (defocus_um, sigma_px), sorted by |defocus|
    empty_refused: float  # share of empty-field frames with no reading (NaN)
    empty_confidence_mean: float
    field_confidence_mean: float
    # FLAKE_ROI as autofocus reads it: rank correlation over the frames it reads, and how many
    spearman_field_read: float
    field_read_frames: int
    field_read_sigma_px: list[tuple[float, float]]  # (defocus_um, sigma_px or NaN if refused)


def score_flake(frames: list[FlakeFrame]) -> FlakeScore:
    field = sorted((f for f in frames if f.tile == FLAKE_FIELD), key=lambda f: abs(f.defocus_um))
    empty = [f for f in frames if f.tile != FLAKE_FIELD]
    d = np.array([abs(f.defocus_um) for f in field])
    s = np.array([f.flake_sigma_px for f in field])
    read = np.array([f.flake_reading.sigma_px for f in field])

    def rank(sig: np.ndarray[tuple[int], np.dtype[np.float64]]) -> float:
        ok = np.isfinite(sig)
        return float(stats.spearmanr(sig[ok], d[ok]).statistic) if ok.sum() > 2 else float("nan")

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return FlakeScore(
        rank(s),
        [(round(f.defocus_um, 3), round(f.flake_sigma_px, 4)) for f in field],
        mean([float(not np.isfinite(f.reading.sigma_px)) for f in empty]),
        mean([f.reading.confidence for f in empty]),
        mean([f.reading.confidence for f in field]),
        rank(read),
        int(np.isfinite(read).sum()),
        [(round(f.defocus_um, 3), round(f.flake_reading.sigma_px, 4)) for f in field],
    )
