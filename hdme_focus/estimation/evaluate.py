"""Score any DefocusEstimator on a fixed held-out synthetic test set.

One standard test set (held-out images, fixed seed, default recipe) so numbers
from the CLI, the benchmarks and the model card are comparable. Errors are
reported over all pixels, over textured pixels (base.texture_mask: flat regions
carry no blur information for any estimator), per true-sigma bin, and per
sigma-map kind.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.table import Table

from hdme_focus.estimation.base import DefocusEstimator, texture_mask
from hdme_focus.estimation.metrics import defocus_metrics, metrics_by_bin
from hdme_focus.estimation.noise import NO_NOISE
from hdme_focus.estimation.sources import load_source_images
from hdme_focus.estimation.synthesis import (
    SynthesisRecipe,
    load_test_set,
    make_test_set,
    save_test_set,
)

TEST_SEED = 20_251_122  # fixed: every report in this project uses the same samples
TEST_N = 200
TEST_CROP_PX = 128
BINS_PX: tuple[float, ...] = (0, 1, 2, 4, 6, 8, 10)
TABLE_METRICS: tuple[str, ...] = ("mae_norm", "mse_norm", "mae_px", "abs_rel", "rmse", "delta1")
MARKDOWN_METRICS: tuple[str, ...] = (*TABLE_METRICS, "sq_rel", "rmse_log", "delta2", "delta3")


def standard_test_set(
    n: int = TEST_N,
    crop_px: int = TEST_CROP_PX,
    cache_dir: Path | None = None,
    source_dir: Path | None = None,
    recipe: SynthesisRecipe | None = None,
) -> dict[str, NDArray[Any]]:
    """The held-out test set (built once, cached as .npz in cache_dir when given)."""
    cache = None
    if cache_dir is not None and source_dir is None and recipe is None:
        cache = Path(cache_dir) / f"testset-n{n}-c{crop_px}-s{TEST_SEED}.npz"
        if cache.is_file():
            return load_test_set(cache)
    _, heldout = load_source_images(source_dir)
    data = make_test_set(heldout, n, crop_px, recipe or SynthesisRecipe(), TEST_SEED)
    if cache is not None:
        save_test_set(cache, data)
    return data


def evaluate(
    estimator: DefocusEstimator,
    test_set: dict[str, NDArray[Any]],
    sigma_max_px: float = 10.0,
    bins_px: Sequence[float] = BINS_PX,
) -> dict[str, Any]:
    """Predict every test image and compute the metrics; a JSON-ready dict."""
    images = test_set["images"]
    truth = test_set["sigma_px"]
    preds = np.empty_like(truth, dtype=np.float32)
    masks = np.empty(truth.shape, dtype=bool)
    bits = test_set.get("bit_depth")
    start = time.perf_counter()
    for k, img in enumerate(images):
        pred = np.asarray(estimator.predict(img, int(bits[k]) if bits is not None else None))
        if pred.shape != img.shape:
            raise ValueError(
                f"{estimator.name} returned shape {pred.shape} for an image of {img.shape}"
            )
        preds[k] = pred
        masks[k] = texture_mask(img, noise=NO_NOISE)  # raw local std: a fixed definition
    wall = time.perf_counter() - start
    report: dict[str, Any] = {
        "estimator": estimator.name,
        "n_images": len(images),
        "image_shape": [int(s) for s in images.shape[1:]],
        "sigma_max_px": float(sigma_max_px),
        "textured_fraction": float(masks.mean()),
        "seconds_per_image": wall / max(len(images), 1),
        "all": defocus_metrics(preds, truth, sigma_max_px),
        "textured": defocus_metrics(preds, truth, sigma_max_px, masks),
        "bins": metrics_by_bin(preds, truth, bins_px, sigma_max_px),
        "bins_textured": metrics_by_bin(preds, truth, bins_px, sigma_max_px, masks),
    }
    if "map_kind" in test_set:
        kinds = np.asarray(test_set["map_kind"]).astype(str)
        per: dict[str, Any] = {}
        for kind in sorted(set(kinds.tolist())):
            sel = kinds == kind
            per[kind] = defocus_metrics(preds[sel], truth[sel], sigma_max_px, masks[sel])
        report["by_map_kind_textured"] = per
    return report


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def render_table(report: dict[str, Any]) -> Table:
    """Rows: all pixels, textured pixels, then each true-sigma bin (textured pixels).

    The JSON report holds every metric; the table keeps what fits 100 columns.
    """
    table = Table(title=f"{report['estimator']}: {report['n_images']} held-out images")
    table.add_column("pixels", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for name in TABLE_METRICS:
        table.add_column(name, justify="right", no_wrap=True)
    rows: list[tuple[str, dict[str, float]]] = [
        ("all", report["all"]),
        ("textured", report["textured"]),
    ]
    for b in report["bins_textured"]:
        rows.append((f"tex {b['bin_lo_px']:g}-{b['bin_hi_px']:g}px", b))
    for label, m in rows:
        table.add_row(label, f"{int(m['n_pixels'])}", *(_fmt(m[k]) for k in TABLE_METRICS))
    return table


def markdown_table(reports: Sequence[dict[str, Any]]) -> str:
    """One row per estimator: textured-pixel metrics, then MAE/sigma_max on all pixels."""
    head = ["estimator", *(f"{m} (tex)" for m in MARKDOWN_METRICS), "mae_norm (all)", "s/image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        cells = [r["estimator"], *(_fmt(r["textured"][m]) for m in MARKDOWN_METRICS)]
        cells += [_fmt(r["all"]["mae_norm"]), f"{r['seconds_per_image']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_filename(estimator_name: str) -> str:
    """A safe file name for an estimator's JSON report."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", estimator_name) + ".json"


def write_report(report: dict[str, Any], path: Path | str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    return p
