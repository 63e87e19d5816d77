"""`hdme-focus train` and `hdme-focus estimate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from hdme_focus.cli import UserError, app, console, err_console, handle_errors


@app.command("train")
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


@app.command("estimate")
@handle_errors
def estimate_cmd(
    images: list[Path] = typer.Argument(..., help="Image files (PNG, TIFF, JPEG...)."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    estimator: str | None = typer.Option(
        None,
        "--estimator",
        help="hdme-net (default, hdme-lite), hdme-tiny, or a baseline name, e.g. reblur.",
    ),
    weights: Path | None = typer.Option(None, "--weights", help="HDME-Net weights (.safetensors)."),
    downscale: float = typer.Option(
        1.0, "--downscale", help="Estimate on the frame resized by 1/K (blur beyond 10 px)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
) -> None:
    """Write <stem>.sigma.tiff (float32 sigma in px) and <stem>.sigma.png for each IMAGE."""
    from hdme_focus.core.frame import ImageInputError
    from hdme_focus.estimation.registry import load_estimator
    from hdme_focus.estimation.sources import read_image

    if downscale < 1:
        raise UserError(f"--downscale must be >= 1, got {downscale}")
    if weights is not None and estimator not in (None, "hdme-net", "hdme"):
        raise UserError("--weights applies to hdme-net only; drop --estimator or --weights")
    try:
        est = load_estimator(weights if weights is not None else estimator, device=device)
    except (KeyError, ValueError) as exc:  # WeightsError and UsageError are ValueErrors
        raise UserError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in images:
        gray = read_image(path) if path.is_file() else None
        if gray is None:
            why = "not a readable image" if path.is_file() else "no such file"
            err_console.print(f"[bold red]error:[/] {path}: {why}, skipped")
            failed += 1
            continue
        try:
            sigma = est.predict(gray, downscale=downscale)
        except ImageInputError as exc:
            err_console.print(f"[bold red]error:[/] {path}: {exc}, skipped")
            failed += 1
            continue
        tiff, png = write_sigma_map(sigma, out, path.stem)
        console.print(
            f"{path.name}: median sigma {float(np.median(sigma)):.2f} px -> {tiff.name}, {png.name}"
        )
    if failed:
        raise UserError(f"{failed} of {len(images)} image(s) could not be processed")


def write_sigma_map(sigma_px: np.ndarray, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """float32 TIFF (sigma in px) + a colour-mapped PNG with a colour bar in px."""
    import matplotlib
    import tifffile

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiff = out_dir / f"{stem}.sigma.tiff"
    png = out_dir / f"{stem}.sigma.png"
    tifffile.imwrite(tiff, np.asarray(sigma_px, dtype=np.float32))
    h, w = sigma_px.shape
    fig, ax = plt.subplots(figsize=(6.0, 6.0 * h / w + 0.4))
    im = ax.imshow(
        sigma_px, cmap="viridis", vmin=0.0, vmax=max(1.0, float(np.percentile(sigma_px, 99.5)))
    )
    ax.set_axis_off()
    ax.set_title(f"{stem}: defocus blur")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="sigma (px)")
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return tiff, png
