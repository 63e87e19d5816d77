"""`estimate` on image files: read each, refuse what has no blur to measure, write atomically.

The procedure behind `hdme-focus estimate`. Three rules a batch run must keep:
no input's result replaces another's (two inputs named `sample.png` in
different folders get distinct output names, and so does an input whose name
is taken in the output folder by an earlier run's other input; each TIFF
records its source, and the renaming is reported);
every output appears complete or not at all (core.atomic); an image with
nothing to measure (uniform black or white, fully clipped) is refused instead
of reported as a blur.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hdme_focus.core.atomic import write_figure_atomic, write_tiff_atomic
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32, ImageInputError, saturation_mask, to_gray_float
from hdme_focus.estimation.base import DefocusEstimate
from hdme_focus.records import read_image

MIN_CONTRAST = 2.0 / 255.0  # gray range below this: a uniform frame, no edge to measure
MAX_CLIPPED_FRACTION = 0.99  # more clipped than this: nothing left to estimate on


@dataclass(frozen=True)
class EstimateOutput:
    """What one input produced: the sigma map's files and its median (NaN pixels masked)."""

    source: Path
    stem: str
    tiff: Path
    png: Path
    median_sigma_px: float
    masked_fraction: float
    confidence_tiff: Path | None = None
    median_confidence: float = float("nan")
    learned_confidence: bool = False


def check_out_dir(out: Path) -> None:
    """`--out` must be a directory this process can write; one line otherwise."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is a file; pass a directory for the outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise UsageError(f"--out {out}: permission denied; choose a folder you can write") from None
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    probe = out / ".hdme-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        why = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
        raise UsageError(
            f"--out {out}: cannot write there ({why}); choose another folder"
        ) from None


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct output stem per input: its stem, prefixed by parent folders when shared.

    `a/sample.png` and `b/sample.png` become `a_sample` and `b_sample`; the
    same file given twice keeps one stem. Falls back to `-2`, `-3` suffixes.
    """
    unique = list(dict.fromkeys(Path(p) for p in paths))
    clashes = Counter(p.stem for p in unique)
    stems: dict[Path, str] = {}
    taken: set[str] = set()
    for p in unique:
        stem = p.stem
        parent = p.resolve().parent.name
        if clashes[p.stem] > 1 and parent:
            stem = f"{parent}_{p.stem}"
        candidate, n = stem, 2
        while candidate in taken:
            candidate, n = f"{stem}-{n}", n + 1
        taken.add(candidate)
        stems[p] = candidate
    return stems


def read_input_image(path: Path) -> F32:
    """Gray float32 in [0, 1]; ImageInputError that says what is wrong with the file."""
    pixels, bit_depth = read_image(path)
    try:
        return to_gray_float(pixels, bit_depth)
    except ImageInputError as exc:
        raise ImageInputError(f"{path}: {exc}") from None


def check_measurable(gray01: F32, path: Path) -> None:
    """Refuse a frame with no texture: a uniform or clipped image has no blur to read."""
    lo, hi = float(gray01.min()), float(gray01.max())
    if hi - lo < MIN_CONTRAST:
        raise ImageInputError(
            f"{path}: uniform image (all pixels {lo:.3f}-{hi:.3f}); there is no edge to measure "
            "blur on; check the exposure, the lens cap or the light"
        )
    clipped = float(np.mean(saturation_mask(gray01)))
    if clipped > MAX_CLIPPED_FRACTION:
        raise ImageInputError(
            f"{path}: {clipped:.0%} of the pixels are clipped white; shorten the exposure"
        )


def estimate_files(
    paths: Sequence[Path],
    out_dir: Path,
    estimate: Callable[[F32], DefocusEstimate],
    *,
    on_done: Callable[[EstimateOutput], None] | None = None,
    on_error: Callable[[Path, str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[EstimateOutput], int]:
    """Estimate each file into out_dir (sigma map, its PNG and the confidence map); returns
    the outputs and the number refused."""
    stems = output_stems(paths)
    outputs: list[EstimateOutput] = []
    failed = 0
    for i, (path, stem) in enumerate(stems.items()):
        stem = free_stem(out_dir, stem, path)
        try:
            gray = read_input_image(path)
            check_measurable(gray, path)
            est = estimate(gray)
            sigma = np.asarray(est.sigma_px, dtype=np.float32)
            sigma = np.where(saturation_mask(gray), np.float32(np.nan), sigma).astype(np.float32)
            tiff, png = write_sigma_map(sigma, out_dir, stem, path)
            conf_tiff = write_confidence_map(est, out_dir, stem, path)
        except ImageInputError as exc:
            failed += 1
            if on_error is not None:
                on_error(path, str(exc))
        else:
            finite = sigma[np.isfinite(sigma)]
            result = EstimateOutput(
                path,
                stem,
                tiff,
                png,
                float(np.median(finite)) if finite.size else float("nan"),
                1.0 - finite.size / sigma.size,
                conf_tiff,
                float(np.median(est.confidence)),
                est.learned,
            )
            outputs.append(result)
            if on_done is not None:
                on_done(result)
        if progress is not None:
            progress(i + 1, len(stems))
    return outputs, failed


def _source_of(tiff: Path) -> str | None:
    """The input a sigma TIFF was estimated from (its metadata), None if unknown."""
    import tifffile

    try:
        with tifffile.TiffFile(tiff) as tf:
            meta = tf.shaped_metadata
        return str(meta[0].get("source")) if meta and meta[0].get("source") else None
    except Exception:  # unreadable or foreign: treat as another input's file
        return None


def free_stem(out_dir: Path, stem: str, source: Path) -> str:
    """`stem`, unless out_dir already holds another input's result under it: then stem-2, ..."""
    candidate, n = stem, 2
    while (out_dir / f"{candidate}.sigma.tiff").exists() and _source_of(
        out_dir / f"{candidate}.sigma.tiff"
    ) != str(source.resolve()):
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


def write_confidence_map(
    estimate: DefocusEstimate, out_dir: Path, stem: str, source: Path | None = None
) -> Path:
    """float32 TIFF of the per-pixel confidence in [0, 1], atomic; its metadata says whether
    it is the estimator's learned one (with the Laplace error scale's meaning) or the
    texture heuristic."""
    kind = (
        "learned: 1 - b / (sigma_max / 4) of the predicted Laplace error scale b"
        if estimate.learned
        else "texture heuristic: s / (s + 0.01) of the local std s"
    )
    meta = {
        "unit": "1",
        "confidence": kind,
        "source": str(source.resolve()) if source is not None else "",
    }
    return write_tiff_atomic(
        out_dir / f"{stem}.confidence.tiff",
        np.asarray(estimate.confidence, dtype=np.float32),
        meta,
    )


def write_sigma_map(
    sigma_px: np.ndarray, out_dir: Path, stem: str, source: Path | None = None
) -> tuple[Path, Path]:
    """float32 TIFF (sigma in px, NaN where clipped, the input's path in its metadata) and
    a colour-mapped PNG, both atomic."""
    from matplotlib.figure import Figure

    meta = {"unit": "px", "source": str(source.resolve()) if source is not None else ""}
    tiff = write_tiff_atomic(
        out_dir / f"{stem}.sigma.tiff", np.asarray(sigma_px, dtype=np.float32), meta
    )
    h, w = sigma_px.shape
    fig = Figure(figsize=(6.0, 6.0 * h / w + 0.4))
    ax = fig.subplots()
    finite = sigma_px[np.isfinite(sigma_px)]
    top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    im = ax.imshow(sigma_px, cmap="viridis", vmin=0.0, vmax=max(1.0, top))
    ax.set_axis_off()
    ax.set_title(f"{stem}: defocus blur")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="sigma (px)")
    png = write_figure_atomic(out_dir / f"{stem}.sigma.png", fig, dpi=100, bbox_inches="tight")
    return tiff, png
