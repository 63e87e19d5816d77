"""`hdme-focus train` and `hdme-focus estimate`."""

from __future__ import annotations

from pathlib import Path

import typer

from hdme_focus.cli.common import (
    DeviceOption,
    EstimatorOption,
    UserError,
    console,
    err_console,
    handle_errors,
    load_estimator,
)
from hdme_focus.estimation.devices import Device


@handle_errors
def train_cmd(
    out: Path = typer.Option(
        ..., "--out", help="Run directory (checkpoints, metrics.csv, loss.png)."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="Model preset, e.g. hdme-lite, hdme-w48."
    ),
    recipe: Path | None = typer.Option(None, "--recipe", help="Training recipe (TOML)."),
    steps: int | None = typer.Option(
        None, "--steps", help="Total optimiser steps (overrides the recipe)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    source_dir: Path | None = typer.Option(None, "--source-dir", help="Folder of source photos."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop after this wall time."
    ),
    export_to: Path | None = typer.Option(
        None, "--export", help="After training, write the best weights + model card here."
    ),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Fine-tune from these weights (e.g. the shipped ones) instead of a random start.",
    ),
) -> None:
    """Train HDME-Net on synthetic defocus data (torchrun for several GPUs)."""
    from pydantic import ValidationError

    from hdme_focus.estimation import train as tr

    try:
        rec = tr.load_recipe(
            recipe,
            preset=preset,
            steps=steps,
            source_dir=str(source_dir) if source_dir else None,
            max_minutes=max_minutes,
            init_weights=str(init) if init else None,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"recipe: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UserError(f"recipe {recipe}: {exc}") from None
    try:
        result = tr.train(rec, out, resume=resume, device=device)
    except (FileExistsError, ValueError) as exc:
        raise UserError(str(exc)) from None
    console.print(
        f"{result.step} steps, {result.wall_s / 60:.1f} min, best held-out MAE/sigma_max "
        f"(textured) {result.best_val:.4f}; run in {out}"
    )
    if export_to is not None:
        w, card = tr.export(out, export_to)
        console.print(f"exported {w} and {card}")


@handle_errors
def estimate_cmd(
    images: list[Path] = typer.Argument(..., help="Image files (PNG, TIFF, JPEG...)."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    estimator: str | None = EstimatorOption,
    weights: Path | None = typer.Option(None, "--weights", help="HDME-Net weights (.safetensors)."),
    downscale: float = typer.Option(
        1.0, "--downscale", help="Estimate on the frame resized by 1/K (blur beyond 10 px)."
    ),
    device: Device = DeviceOption,
) -> None:
    """Write <stem>.sigma.tiff (float32 sigma in px), <stem>.sigma.png and
    <stem>.confidence.tiff (0-1: the estimator's learned confidence, or the texture
    heuristic for estimators without one) for each IMAGE.

    Inputs that share a name get their folder as a prefix (a/x.png -> a_x.sigma.*),
    said on the line. Uniform or clipped frames are refused; clipped pixels are
    NaN in the TIFF. Every file is written whole or not at all.
    """
    from hdme_focus.cli.output import progress_bar
    from hdme_focus.instrument import estimate_files as ef

    if downscale < 1:
        raise UserError(f"--downscale must be >= 1, got {downscale}")
    ef.check_out_dir(out)
    est = load_estimator(estimator, device, weights=weights)

    def done(r: ef.EstimateOutput) -> None:
        renamed = (
            ""
            if r.stem == r.source.stem
            else f" (renamed: {r.source.stem}.sigma.* is another input's result)"
        )
        masked = f", {r.masked_fraction:.0%} clipped (NaN)" if r.masked_fraction > 0 else ""
        kind = "learned" if r.learned_confidence else "texture"
        conf = f", confidence {r.median_confidence:.2f} ({kind})"
        names = ", ".join(p.name for p in (r.tiff, r.png, r.confidence_tiff) if p is not None)
        console.print(
            f"{r.source}: median sigma {r.median_sigma_px:.2f} px{conf}{masked} -> "
            f"{names}{renamed}",
            highlight=False,
            soft_wrap=True,
        )

    def refused(path: Path, why: str) -> None:
        err_console.print(f"[bold red]error:[/] {why}, skipped", highlight=False, soft_wrap=True)

    try:
        with progress_bar(err_console, "estimating images") as progress:
            _, failed = ef.estimate_files(
                images,
                out,
                lambda gray: est.estimate(gray, downscale=downscale),
                on_done=done,
                on_error=refused,
                progress=progress,
            )
    except PermissionError as exc:
        raise UserError(f"cannot write {exc.filename or out}: permission denied") from None
    if failed:
        raise UserError(f"{failed} of {len(images)} image(s) could not be processed")
