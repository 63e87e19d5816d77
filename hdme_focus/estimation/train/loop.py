"""The training loop: a model (`tasks`) on synthetic defocus samples, with exact resume.

Determinism: the batch of step s is samples [s*B*W + r*B, ...) of a seeded
on-the-fly dataset (W ranks, rank r), and the learning rate is a pure function
of s, so `--resume` continues exactly where the run stopped, and ranks under
`torchrun` draw disjoint samples without a sampler. Checkpoints hold the model,
the Adam moments and the step, all as safetensors (nothing pickled).

Multi-GPU: `torchrun --nproc_per_node=N --no-python hdme-focus train ...` runs one
process per GPU with DistributedDataParallel (initialised from WORLD_SIZE /
RANK / LOCAL_RANK); the recipe's batch size is per process. Only rank 0 writes
files. Tested here with world size 1 only.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from hdme_focus.core.atomic import write_figure_atomic, write_text_atomic
from hdme_focus.estimation.devices import resolve_device
from hdme_focus.estimation.model import count_params
from hdme_focus.estimation.synthesis import SyntheticDefocusDataset, make_test_set
from hdme_focus.estimation.train.checkpoints import (
    BEST_NAME,
    CKPT_NAME,
    checkpoint_meta,
    load_checkpoint,
    save_checkpoint,
)
from hdme_focus.estimation.train.recipe import TrainRecipe, lr_at
from hdme_focus.estimation.train.tasks import TASKS
from hdme_focus.estimation.weights import read_weights, save_weights

METRICS_NAME = "metrics.csv"
METRIC_FIELDS = ("step", "loss", "lr", "val_mae_px", "val_mae_norm_textured", "elapsed_s")


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return Dist(rank, world, local), torch.device("cuda", local)
    dist.init_process_group("gloo")
    return Dist(rank, world, local), torch.device("cpu")


# --------------------------------------------------------------------------- data


def _batches(
    dataset: SyntheticDefocusDataset, start: int, steps: int, batch: int, dist: Dist, workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of steps [start, steps): step s takes samples s*B*W + r*B + [0, B)."""
    plan = [
        list(range((s * dist.world + dist.rank) * batch, (s * dist.world + dist.rank + 1) * batch))
        for s in range(start, steps)
    ]
    loader = DataLoader(
        dataset,
        batch_sampler=plan,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    yield from loader


# --------------------------------------------------------------------------- outputs


def _append_metrics(path: Path, row: dict[str, Any], keep_upto: int | None = None) -> None:
    rows: list[dict[str, str]] = []
    if keep_upto is not None and path.exists():
        with path.open() as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_upto]
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, METRIC_FIELDS)
            w.writeheader()
            w.writerows(rows)
        return
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in METRIC_FIELDS})


def plot_metrics(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    vs = [
        (int(r["step"]), float(r["val_mae_norm_textured"]))
        for r in rows
        if r["val_mae_norm_textured"]
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        steps,
        loss,
        lw=0.6,
        alpha=0.6,
        label="train loss (L1 of sigma/sigma_max, or cross-entropy)",
    )
    if vs:
        ax.plot(*zip(*vs, strict=True), "o-", label="held-out MAE / sigma_max (textured)")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.96)
    write_figure_atomic(png_path, fig, dpi=110)
    plt.close(fig)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


# --------------------------------------------------------------------------- the run


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_val: float
    wall_s: float


def _load_init(model: nn.Module, path: Path, sigma_max_px: float) -> None:
    """Start from exported weights (fine-tuning); they must be the same network and range."""
    init, meta = read_weights(path)
    if init.config != getattr(model, "config", None):
        raise ValueError(
            f"init weights {path} are a {meta.get('preset')} network, not the recipe's preset; "
            "set preset to match or leave init_weights out"
        )
    if float(meta["sigma_max_px"]) != sigma_max_px:
        raise ValueError(
            f"init weights {path} were trained for sigma_max {meta['sigma_max_px']} px, "
            f"the recipe says {sigma_max_px:g} px"
        )
    model.load_state_dict(init.state_dict())


def train(
    recipe: TrainRecipe,
    run_dir: Path,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Run (or with resume=True continue) a training run in run_dir.

    stop_after: pause after this step (checkpointed), as an interruption
    would; the schedule still spans recipe.steps.
    """
    from hdme_focus.estimation.sources import load_source_images

    task = TASKS[recipe.model]
    if recipe.preset not in task.presets:
        raise ValueError(
            f"unknown preset {recipe.preset!r} for model {recipe.model!r}; "
            f"choose one of {', '.join(task.presets)}"
        )
    dist, dev = _init_distributed(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / CKPT_NAME
    if ckpt.exists() and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose a new --out"
        )
    smax = recipe.synthesis.sigma_max_px

    torch.manual_seed(recipe.seed)
    model = task.build(recipe.preset).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    start, best = 0, float("inf")
    if recipe.init_weights and not resume:  # on resume the checkpoint already holds them
        _load_init(model, Path(recipe.init_weights), smax)
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(str(ckpt))
        start, best = load_checkpoint(ckpt, model, opt)
        stored = TrainRecipe.model_validate_json(checkpoint_meta(ckpt)["recipe"])
        if recipe.init_weights is None:  # the checkpoint holds them; keep the card's lineage
            recipe = recipe.model_copy(update={"init_weights": stored.init_weights})
        if stored.model_dump(exclude={"steps", "max_minutes", "num_workers"}) != recipe.model_dump(
            exclude={"steps", "max_minutes", "num_workers"}
        ):
            raise ValueError(
                f"{ckpt} was trained with a different recipe; resume with the same recipe file"
            )
    if dist.main:  # on resume too: a run may be extended with more --steps or minutes
        write_text_atomic(run_dir / "recipe.json", recipe.model_dump_json(indent=2))
    net: nn.Module = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    # split by SPLIT_SEED, not recipe.seed: every run holds out what `evaluate` tests on
    train_src, heldout = load_source_images(
        Path(recipe.source_dir) if recipe.source_dir else None, recipe.heldout_fraction
    )
    length = recipe.steps * recipe.batch_size * dist.world
    data = SyntheticDefocusDataset(train_src, length, recipe.crop_px, recipe.synthesis, recipe.seed)
    val = make_test_set(
        heldout or train_src,
        recipe.val_samples,
        recipe.val_crop_px,
        recipe.synthesis,
        recipe.seed + 7919,
    )

    amp_dtype = (
        torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    )
    use_amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    metrics = run_dir / METRICS_NAME
    if dist.main and resume:
        _append_metrics(metrics, {}, keep_upto=start)

    t0 = time.monotonic()
    elapsed_before = _elapsed_before(metrics) if resume else 0.0
    deadline = recipe.max_minutes
    step = start
    bar = _progress(progress and dist.main)
    bar_task = bar.add_task("train", total=recipe.steps, completed=start) if bar else None
    running: list[float] = []
    try:
        if bar:
            bar.start()
        model.train()
        for x, y in _batches(
            data, start, recipe.steps, recipe.batch_size, dist, recipe.num_workers
        ):
            # rank 0's clock decides for all ranks: same LR everywhere, same last step
            frac = _rank0_value(_time_fraction(recipe, elapsed_before, t0), dist, dev)
            lr = lr_at(step, recipe, frac)
            for g in opt.param_groups:
                g["lr"] = lr
            xb = task.inputs(x, step, recipe).to(dev)
            yb = task.targets(y, recipe).to(dev)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                pred = net(xb)
            loss = task.loss(pred, yb, recipe)
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(scaler.scale(loss))
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            loss_value = loss.item()
            running.append(loss_value)
            row: dict[str, Any] = {
                "step": step,
                "loss": f"{loss_value:.6f}",
                "lr": f"{lr:.3e}",
            }
            last = (
                step == recipe.steps or step == stop_after or (deadline is not None and frac >= 1.0)
            )
            if dist.main and (step % recipe.val_every == 0 or last):
                v = task.validate(model, val, dev, smax)
                row.update({k: f"{val_:.5f}" for k, val_ in v.items()})
                if v["val_mae_norm_textured"] < best:
                    best = v["val_mae_norm_textured"]
                    save_weights(
                        run_dir / BEST_NAME,
                        model,
                        preset=recipe.preset,
                        sigma_max_px=smax,
                        extra={"step": str(step)},
                    )
            if dist.main:
                row["elapsed_s"] = f"{elapsed_before + time.monotonic() - t0:.1f}"
                _append_metrics(metrics, row)
                if step % recipe.checkpoint_every == 0 or last:
                    save_checkpoint(ckpt, model, opt, step, recipe, best)
                    plot_metrics(metrics, run_dir / "loss.png")
            if bar and bar_task is not None:
                bar.update(
                    bar_task,
                    completed=step,
                    description=f"loss {np.mean(running[-50:]):.4f} best {best:.4f}",
                )
            if last:
                break
    finally:
        if bar:
            bar.stop()
    wall = elapsed_before + time.monotonic() - t0
    if dist.main:
        write_text_atomic(
            run_dir / "train_info.json",
            json.dumps(
                {
                    "step": step,
                    "wall_s": round(wall, 1),
                    "hardware": _hardware(dev),
                    "world_size": dist.world,
                    "params": count_params(model),
                    "torch": torch.__version__,
                },
                indent=2,
            ),
        )
    return TrainResult(run_dir, step, best, wall)


def _rank0_value(value: float, dist: Dist, device: torch.device) -> float:
    if dist.world <= 1:
        return value
    import torch.distributed as tdist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    tdist.broadcast(t, src=0)
    return float(t.item())


def _time_fraction(recipe: TrainRecipe, elapsed_before: float, t0: float) -> float:
    if not recipe.max_minutes:
        return 0.0
    return (elapsed_before + time.monotonic() - t0) / (recipe.max_minutes * 60)


def _elapsed_before(metrics: Path) -> float:
    if not metrics.exists():
        return 0.0
    with metrics.open() as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["elapsed_s"]) if rows and rows[-1].get("elapsed_s") else 0.0


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
