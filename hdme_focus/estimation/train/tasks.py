"""What differs between the models the loop trains: network, inputs, targets, loss, validation.

`hdme-net` regresses a per-pixel sigma map from whole crops; `patch-classifier`
classifies each crop's (constant) blur into levels. The loop, checkpoints,
resume and export are the same for both (`recipe.model` picks the task).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hdme_focus.estimation.base import texture_mask
from hdme_focus.estimation.model import (
    PATCH_PRESETS,
    PRESETS,
    Network,
    build_model,
    build_patch_net,
    standardize,
)
from hdme_focus.estimation.noise import NO_NOISE
from hdme_focus.estimation.patch_classifier import (
    class_values_px,
    presmooth,
    read_out,
    soft_targets,
)
from hdme_focus.estimation.train.recipe import TrainRecipe


def _gain_jitter(x: torch.Tensor, step: int, recipe: TrainRecipe) -> torch.Tensor:
    """A seeded random gain per sample after standardising (a pure function of the step)."""
    if recipe.contrast_jitter <= 0:
        return x
    g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step)
    gain = torch.exp(
        (torch.rand(x.shape[0], 1, 1, 1, generator=g) * 2 - 1) * recipe.contrast_jitter
    )
    return x * gain


class Task(Protocol):
    presets: tuple[str, ...]

    def build(self, preset: str) -> Network: ...

    def inputs(self, x: torch.Tensor, step: int, recipe: TrainRecipe) -> torch.Tensor: ...

    def targets(self, y: torch.Tensor, recipe: TrainRecipe) -> torch.Tensor: ...

    def loss(self, pred: torch.Tensor, target: torch.Tensor, recipe: TrainRecipe) -> torch.Tensor:
        """Training loss of a batch."""
        ...

    def validate(
        self, model: nn.Module, val: dict[str, Any], device: torch.device, smax: float
    ) -> dict[str, float]:
        """val_mae_px (all) and val_mae_norm_textured (MAE / sigma_max on textured pixels)."""
        ...


# --------------------------------------------------------------------------- HDME-Net


NLL_WEIGHT = 0.1


def loss_fn(pred: torch.Tensor, target: torch.Tensor, recipe: TrainRecipe) -> torch.Tensor:
    """HDME-Net: L1 (optionally + MSE) of sigma / sigma_max; with an uncertainty channel
    also the Laplace NLL of the error, whose sigma is detached so the scale head learns
    calibration, not the blur."""
    smax = recipe.synthesis.sigma_max_px
    p, t = pred[:, :1].float() / smax, target / smax
    loss = F.l1_loss(p, t)
    if recipe.loss == "l1+mse":
        loss = loss + recipe.mse_weight * F.mse_loss(p, t)
    if pred.shape[1] == 2:
        log_b = pred[:, 1:2].float()
        err = (pred[:, :1].float().detach() - target).abs()
        loss = loss + NLL_WEIGHT * (err * torch.exp(-log_b) + log_b).mean()
    return loss


class SigmaMapTask:
    presets: tuple[str, ...] = tuple(PRESETS)

    def build(self, preset: str) -> Network:
        # channels-last: ~1.3x faster convolutions on CPU (oneDNN) and on tensor cores
        net = build_model(preset)
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # in place
        return net

    def inputs(self, x: torch.Tensor, step: int, recipe: TrainRecipe) -> torch.Tensor:
        """Standardise each crop (as inference does per frame), then a seeded random gain."""
        return _gain_jitter(standardize(x), step, recipe).contiguous(
            memory_format=torch.channels_last
        )

    def targets(self, y: torch.Tensor, recipe: TrainRecipe) -> torch.Tensor:
        return y.contiguous(memory_format=torch.channels_last)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, recipe: TrainRecipe) -> torch.Tensor:
        return loss_fn(pred, target, recipe)

    @torch.no_grad()
    def validate(
        self, model: nn.Module, val: dict[str, Any], device: torch.device, smax: float
    ) -> dict[str, float]:
        model.eval()
        x = torch.from_numpy(val["images"])[:, None]
        y = val["sigma_px"]
        preds = []
        for i in range(0, x.shape[0], 8):
            xb = standardize(x[i : i + 8]).to(device)
            preds.append(model(xb).float().cpu()[:, 0].numpy())
        model.train()
        p = np.concatenate(preds)
        mask = np.stack([texture_mask(im, noise=NO_NOISE) for im in val["images"]])
        err = np.abs(p - y)
        return {
            "val_mae_px": float(err.mean()),
            "val_mae_norm_textured": float(err[mask].mean() / smax) if mask.any() else float("nan"),
        }


# --------------------------------------------------------------------------- patch classifier


def _patch_inputs(x: torch.Tensor, patch_px: int) -> torch.Tensor:
    """Crops [N, 1, S, S] -> the classifier's input: pre-smoothed as the frame is at
    inference, centre patch_px x patch_px (so the pre-smoothing sees real neighbours),
    standardised per patch."""
    size = x.shape[-1]
    if size < patch_px:
        raise ValueError(f"crop_px {size} is smaller than the {patch_px} px patch")
    lo = (size - patch_px) // 2
    smooth = np.stack([presmooth(im) for im in x[:, 0].numpy()])
    centre = torch.from_numpy(smooth[:, None, lo : lo + patch_px, lo : lo + patch_px].copy())
    return standardize(centre)


class PatchClassTask:
    """Crops rendered with one blur each (constant sigma maps); soft two-level targets."""

    presets: tuple[str, ...] = tuple(PATCH_PRESETS)

    def build(self, preset: str) -> Network:
        net = build_patch_net(preset)
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # in place
        return net

    def inputs(self, x: torch.Tensor, step: int, recipe: TrainRecipe) -> torch.Tensor:
        patch_px = PATCH_PRESETS[recipe.preset].patch_px
        return _gain_jitter(_patch_inputs(x, patch_px), step, recipe).contiguous(
            memory_format=torch.channels_last
        )

    def targets(self, y: torch.Tensor, recipe: TrainRecipe) -> torch.Tensor:
        smax = recipe.synthesis.sigma_max_px
        classes = PATCH_PRESETS[recipe.preset].num_classes
        return soft_targets(y.mean(dim=(1, 2, 3)), classes, smax)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, recipe: TrainRecipe) -> torch.Tensor:
        return F.cross_entropy(pred.float(), target.to(pred.device))

    @torch.no_grad()
    def validate(
        self, model: nn.Module, val: dict[str, Any], device: torch.device, smax: float
    ) -> dict[str, float]:
        model.eval()
        net: Any = model
        patch_px = int(net.config.patch_px)
        values = class_values_px(int(net.config.num_classes), smax)
        x = _patch_inputs(torch.from_numpy(val["images"])[:, None], patch_px)
        logits = torch.cat(
            [model(x[i : i + 256].to(device)).float().cpu() for i in range(0, len(x), 256)]
        )
        model.train()
        sigma, _ = read_out(logits, values)
        truth = torch.from_numpy(val["sigma_px"]).mean(dim=(1, 2))
        err = (sigma - truth).abs().numpy()
        textured = np.array([texture_mask(im, noise=NO_NOISE).mean() > 0.5 for im in val["images"]])
        return {
            "val_mae_px": float(err.mean()),
            "val_mae_norm_textured": float(err[textured].mean() / smax)
            if textured.any()
            else float("nan"),
        }


TASKS: dict[str, Task] = {"hdme-net": SigmaMapTask(), "patch-classifier": PatchClassTask()}
