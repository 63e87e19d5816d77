"""What decides a training run: the recipe (TOML + command-line overrides) and its LR schedule.

Everything in a recipe is stored in checkpoints and model cards, so a run is
reproducible from its card; only the loop's length and wall-time cap may change
on resume.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hdme_focus.estimation.model import DEFAULT_PRESET
from hdme_focus.estimation.synthesis import SynthesisRecipe

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


class TrainRecipe(BaseModel):
    """Everything that decides a training run (stored in checkpoints and the model card)."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["hdme-net", "patch-classifier"] = "hdme-net"
    preset: str = DEFAULT_PRESET  # of that model: model.PRESETS or model.PATCH_PRESETS
    steps: int = Field(6000, ge=1)
    batch_size: int = Field(16, ge=1)
    crop_px: int = Field(80, ge=16)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    loss: Literal["l1", "l1+mse"] = "l1"
    mse_weight: float = Field(0.5, ge=0)
    contrast_jitter: float = Field(0.2, ge=0, description="log-gain jitter after standardising")
    grad_clip: float = Field(1.0, gt=0)
    val_every: int = Field(250, ge=1)
    val_samples: int = Field(48, ge=1)
    val_crop_px: int = Field(128, ge=16)
    checkpoint_every: int = Field(250, ge=1)
    seed: int = 0
    num_workers: int = Field(1, ge=0)
    heldout_fraction: float = Field(0.25, ge=0, lt=1)
    source_dir: str | None = None
    max_minutes: float | None = Field(None, gt=0)
    init_weights: str | None = None  # fine-tune from these weights instead of a random start
    synthesis: SynthesisRecipe = SynthesisRecipe()


def load_recipe(path: Path | None, **overrides: Any) -> TrainRecipe:
    """A TOML recipe (or the defaults) with command-line overrides that are not None."""
    data: dict[str, Any] = {}
    if path is not None:
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainRecipe.model_validate(data)


def lr_at(step: int, recipe: TrainRecipe, time_fraction: float = 0.0) -> float:
    """Learning rate of step `step` (0-based); a pure function: resume needs no scheduler state.

    time_fraction (share of --max-minutes used) moves the schedule on when time,
    not steps, will end the run, so a time-capped run still ends annealed; such a
    run resumes on the same schedule only if it runs at the same speed.
    """
    total = recipe.steps
    warm = int(recipe.warmup_fraction * total)
    if recipe.schedule == "constant":
        return recipe.lr
    if step < warm:
        return recipe.lr * (step + 1) / warm
    t = max((step - warm) / max(1, total - warm), time_fraction)
    floor = 0.01 if recipe.schedule == "onecycle" else 0.0
    return recipe.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))
