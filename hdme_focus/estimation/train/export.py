"""Export: a run's best checkpoint -> shippable weights + a model card with held-out metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hdme_focus.estimation.model import count_params
from hdme_focus.estimation.train.checkpoints import BEST_NAME
from hdme_focus.estimation.train.recipe import TrainRecipe
from hdme_focus.estimation.weights import (
    ERROR_SCALE_KEY,
    model_card,
    read_weights,
    save_weights,
    write_model_card,
)


def heldout_summary(weights: Path) -> dict[str, Any]:
    """Metrics of a weights file on `evaluate.standard_test_set()` (held-out images only)."""
    from hdme_focus.estimation import evaluate as ev
    from hdme_focus.estimation.registry import load_estimator

    report = ev.evaluate(load_estimator(weights, device="cpu"), ev.standard_test_set())
    keep = ("bin_lo_px", "bin_hi_px", "mae_px", "mae_norm", "abs_rel")
    return {
        "test_set": f"evaluate.standard_test_set(): {ev.TEST_N} crops of {ev.TEST_CROP_PX} px "
        f"from held-out images, seed {ev.TEST_SEED}",
        "textured": {k: round(v, 4) for k, v in report["textured"].items()},
        "all": {k: round(v, 4) for k, v in report["all"].items()},
        "textured_by_bin": [
            {k: round(v, 4) for k, v in b.items() if k in keep} for b in report["bins_textured"]
        ],
    }


CALIBRATION_SAMPLES = 96
CALIBRATION_CROP_PX = 128
CALIBRATION_SEED = 20261201


def error_scale_factor(weights: Path, recipe: TrainRecipe) -> dict[str, float]:
    """The factor on the learned error scale b that makes the 68 % interval (+-1.139 b)
    hold 68 % of the truth on textured pixels of held-out crops of the run's own recipe.

    Post-hoc calibration on the training distribution (held-out source images, a
    seed no training used), never on the evaluation benchmark. A network trained
    briefly with an NLL loss is typically over-confident.
    """
    import numpy as np

    from hdme_focus.estimation.base import LAPLACE_68, texture_mask
    from hdme_focus.estimation.noise import NO_NOISE
    from hdme_focus.estimation.registry import load_estimator
    from hdme_focus.estimation.sources import load_source_images
    from hdme_focus.estimation.synthesis import make_test_set

    train_src, heldout = load_source_images(
        Path(recipe.source_dir) if recipe.source_dir else None, recipe.heldout_fraction
    )
    data = make_test_set(
        heldout or train_src,
        CALIBRATION_SAMPLES,
        CALIBRATION_CROP_PX,
        recipe.synthesis,
        CALIBRATION_SEED,
    )
    est = load_estimator(weights, device="cpu")
    ratios = []
    for img, truth in zip(data["images"], data["sigma_px"], strict=True):
        out = est.estimate(img)
        if out.scale_px is None:
            raise ValueError(f"{weights}: no learned error scale to calibrate")
        use = texture_mask(img, noise=NO_NOISE)  # the metrics' fixed definition
        ratios.append(np.abs(out.sigma_px - truth)[use] / np.maximum(out.scale_px[use], 1e-6))
    r = np.concatenate(ratios)
    before = float(np.mean(r <= LAPLACE_68))
    factor = float(np.quantile(r, 0.68) / LAPLACE_68)
    return {"factor": round(factor, 4), "coverage_68_before": round(before, 4)}


def _parent_history(path: Path) -> dict[str, Any]:
    """What a fine-tuned model started from: the parent's card without its metrics."""
    history: dict[str, Any] = {"weights": path.name}
    try:
        _, meta = read_weights(path)
        parent = model_card(meta)
    except (OSError, ValueError):
        return {**history, "note": "parent weights not readable at export time"}
    keep = ("name", "data_recipe", "best_step", "steps_run", "hardware", "wall_time_s", "torch")
    history.update({k: parent[k] for k in keep if k in parent})
    if "fine_tuned_from" in parent:
        history["fine_tuned_from"] = parent["fine_tuned_from"]
    return history


def export(
    run_dir: Path, out_path: Path, *, heldout_metrics: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Best weights of a run -> a shippable .safetensors + `<stem>.json` model card beside it.

    heldout_metrics None: scored here on the project's standard held-out test set.
    """
    best = run_dir / BEST_NAME
    if not best.exists():
        raise FileNotFoundError(str(best))
    if heldout_metrics is None:
        heldout_metrics = heldout_summary(best)
    model, meta = read_weights(best)
    recipe = TrainRecipe.model_validate_json((run_dir / "recipe.json").read_text())
    info = (
        json.loads((run_dir / "train_info.json").read_text())
        if (run_dir / "train_info.json").exists()
        else {}
    )
    card = {
        "name": out_path.stem,
        "preset": recipe.preset,
        "architecture": json.loads(meta["config"]),
        "params": count_params(model),
        "sigma_range_px": [0.0, recipe.synthesis.sigma_max_px],
        "input_normalization": meta["normalization"],
        "data_recipe": json.loads(recipe.model_dump_json()),
        "best_step": int(meta.get("step", "0")),
        "steps_run": info.get("step"),
        "hardware": info.get("hardware"),
        "wall_time_s": info.get("wall_s"),
        "torch": info.get("torch"),
        "heldout_metrics": heldout_metrics or {},
    }
    if recipe.init_weights:  # fine-tuned: keep the parent's training history in the card
        card["fine_tuned_from"] = _parent_history(Path(recipe.init_weights))
    extra = {"step": meta.get("step", "0")}
    if getattr(model.config, "uncertainty", False):
        calibration = error_scale_factor(best, recipe)
        card["error_scale_calibration"] = calibration | {
            "how": f"{CALIBRATION_SAMPLES} held-out crops of {CALIBRATION_CROP_PX} px of the "
            f"run's own recipe, seed {CALIBRATION_SEED}, textured pixels",
        }
        extra[ERROR_SCALE_KEY] = repr(calibration["factor"])
    save_weights(
        out_path,
        model,
        preset=recipe.preset,
        sigma_max_px=recipe.synthesis.sigma_max_px,
        extra=extra | {"model_card": json.dumps(card)},
    )
    return out_path, write_model_card(out_path, card)
