"""Training: the recipe, checkpoints, the loop and export, behind what the CLI uses."""

from hdme_focus.estimation.train.checkpoints import BEST_NAME, CKPT_NAME
from hdme_focus.estimation.train.export import export, heldout_summary
from hdme_focus.estimation.train.loop import TrainResult, train
from hdme_focus.estimation.train.recipe import RECIPES_DIR, TrainRecipe, load_recipe, lr_at
from hdme_focus.estimation.train.tasks import loss_fn

__all__ = [
    "BEST_NAME",
    "CKPT_NAME",
    "RECIPES_DIR",
    "TrainRecipe",
    "TrainResult",
    "export",
    "heldout_summary",
    "load_recipe",
    "loss_fn",
    "lr_at",
    "train",
]
