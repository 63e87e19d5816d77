"""Checkpoints: model, Adam moments, step and recipe in one safetensors file (nothing pickled)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hdme_focus.core.atomic import atomic_path
from hdme_focus.estimation.train.recipe import TrainRecipe

CKPT_NAME, BEST_NAME = "checkpoint.safetensors", "best.safetensors"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"optim.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().clone().contiguous()
    return out


def _load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    recipe: TrainRecipe,
    best: float,
) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(opt))
    meta = {"step": str(step), "best_val": repr(best), "recipe": recipe.model_dump_json()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, float]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _load_optimizer_tensors(opt, {k: v for k, v in tensors.items() if k.startswith("optim.")})
    return int(meta["step"]), float(meta["best_val"])


def checkpoint_meta(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})
