"""Accuracy of every baseline and every available HDME-Net weights on the held-out test set.

    python benchmarks/accuracy.py                      # baselines + shipped weights
    python benchmarks/accuracy.py --weights run/best.safetensors --weights other.safetensors

Writes docs/benchmarks/accuracy.json (full reports) and accuracy.md (tables +
the machine). The test set is the standard one (hdme_focus.estimation.evaluate:
held-out images, fixed seed), so numbers here, in `hdme-focus evaluate` and in
the model card agree.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.estimation.baselines import FocusMeasureEstimator, ReblurEstimator
from hdme_focus.estimation.evaluate import (
    BINS_PX,
    TEST_SEED,
    evaluate,
    markdown_table,
    standard_test_set,
)
from hdme_focus.estimation.sources import load_named_sources
from hdme_focus.estimation.synthesis import SynthesisRecipe


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def model_estimators(weights: list[Path], device: str) -> list[tuple[str, DefocusEstimator]]:
    """(label, estimator): the shipped default (if installed) plus the named weights files."""
    try:
        from hdme_focus.estimation.registry import load_estimator
    except ImportError:
        return []
    found: list[tuple[str, DefocusEstimator]] = []
    for w in [None, *weights]:
        try:
            est = load_estimator(w, device=device)
        except (OSError, ValueError) as exc:
            if w is not None:
                raise SystemExit(f"error: {w}: {exc}") from None
            print(f"(no shipped weights: {exc})", file=sys.stderr)
            continue
        found.append((est.name if w is None else f"{est.name} ({w.name})", est))
    return found


def run_all(
    estimators: list[tuple[str, DefocusEstimator]], data: dict[str, Any], smax: float
) -> list[dict[str, Any]]:
    reports = []
    for label, est in estimators:
        print(f"evaluating {label} ...", file=sys.stderr)
        rep = evaluate(est, data, smax)
        rep["estimator"] = label
        reports.append(rep)
        print(f"  textured MAE/sigma_max {rep['textured']['mae_norm']:.4f}", file=sys.stderr)
    return reports


def bins_markdown(reports: list[dict[str, Any]]) -> str:
    edges = list(BINS_PX)
    head = ["estimator", *(f"{lo:g}-{hi:g} px" for lo, hi in itertools.pairwise(edges))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        cells = [f"{b['mae_px']:.2f}" for b in r["bins_textured"]]
        lines.append("| " + " | ".join([r["estimator"], *cells]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="test images (default 200)")
    ap.add_argument("--crop", type=int, default=128, help="test image size in px")
    ap.add_argument("--weights", type=Path, action="append", default=[], help="extra weights")
    ap.add_argument("--baselines-only", action="store_true")
    ap.add_argument("--device", default="cpu", help="for HDME-Net (default cpu)")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    ap.add_argument("--cache", type=Path, default=None, help="cache the test set .npz here")
    args = ap.parse_args(argv)

    data = standard_test_set(args.n, args.crop, cache_dir=args.cache)
    smax = float(data["sigma_max_px"])
    estimators: list[tuple[str, DefocusEstimator]] = [
        ("reblur", ReblurEstimator(sigma_max_px=smax)),
        ("focus-measure", FocusMeasureEstimator(sigma_max_px=smax)),
    ]
    if not args.baselines_only:
        estimators += model_estimators(args.weights, args.device)
    reports = run_all(estimators, data, smax)
    # the same held-out photos, blurred without shuffling: real image structure, as a
    # camera sees it (labels are the applied blur; the photos' own blur comes on top)
    natural_recipe = SynthesisRecipe(shuffle_fraction=0.0)
    natural = standard_test_set(args.n, args.crop, recipe=natural_recipe)
    natural_reports = run_all(estimators, natural, smax)

    train, held = load_named_sources()
    meta = {
        "machine": machine(),
        "test_set": {
            "n_images": len(data["images"]),
            "crop_px": args.crop,
            "seed": TEST_SEED,
            "sigma_max_px": smax,
            "heldout_sources": list(held),
            "train_sources": list(train),
            "recipe": json.loads(str(data["recipe_json"])),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(
        json.dumps({**meta, "reports": reports, "natural_reports": natural_reports}, indent=2)
        + "\n"
    )
    m = meta["machine"]
    md = [
        "# Defocus accuracy on the held-out synthetic test set\n",
        f"{meta['test_set']['n_images']} images of {args.crop} x {args.crop} px from held-out "
        f"photos ({', '.join(held)}), seed {TEST_SEED}, sigma in [0, {smax:g}] px, default "
        "synthesis recipe (shuffled textures; rectangle, smooth, layered and constant maps; "
        "shot, read and impulse noise; 8/12/16-bit). `(tex)`: textured pixels only "
        "(`base.texture_mask`). Relative metrics floor sigma at 0.5 px.\n",
        markdown_table(reports),
        "\nMAE in px per true-sigma bin (textured pixels):\n",
        bins_markdown(reports),
        "\n## Natural (unshuffled) crops\n",
        "The same held-out photos and sigma maps without pixel shuffling, so the "
        "estimator sees real image structure as a camera would. The labels are the applied "
        "blur only: the photos' own residual blur comes on top, so small-sigma bins read "
        "high for every estimator.\n",
        markdown_table(natural_reports),
        "\nMAE in px per true-sigma bin (textured pixels, natural crops):\n",
        bins_markdown(natural_reports),
        f"\nMachine: {m['cpu']} ({m['cpu_cores']} cores), {m['platform']}, "
        f"Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}"
        + (f", GPU {m['cuda']}" if m["cuda"] else "")
        + ".\n",
        "\nReproduce: `python benchmarks/accuracy.py`\n",
    ]
    (args.out / "accuracy.md").write_text("\n".join(md))
    print(markdown_table(reports))
    print(f"wrote {args.out / 'accuracy.json'} and {args.out / 'accuracy.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
