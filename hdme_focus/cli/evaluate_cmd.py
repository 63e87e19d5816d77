"""`hdme-focus evaluate`: score an estimator on the held-out synthetic test set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hdme_focus.cli import UserError, app, console, handle_errors

if TYPE_CHECKING:
    from hdme_focus.estimation.base import DefocusEstimator


def _load(weights: Path | None, estimator: str | None, device: str) -> DefocusEstimator:
    from hdme_focus.estimation.registry import load_estimator

    if weights is not None and estimator not in (None, "hdme", "hdme-net"):
        raise UserError("--weights applies to hdme-net only; drop --estimator or --weights")
    try:
        return load_estimator(weights if weights is not None else estimator, device=device)
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, LookupError) as exc:
        hint = "" if weights or estimator else " (or pick --estimator reblur)"
        raise UserError(f"estimator {estimator or weights or 'default'}: {exc}{hint}") from None


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    weights: Path | None = typer.Option(None, "--weights", help="HDME-Net weights (.safetensors)."),
    estimator: str | None = typer.Option(
        None,
        "--estimator",
        help="hdme-lite (default), hdme-tiny, patch-classifier, reblur, focus-measure.",
    ),
    test_set: Path | None = typer.Option(
        None, "--test-set", help="A test set .npz; default: the standard held-out set."
    ),
    n: int = typer.Option(200, "--n", help="Images in the standard test set.", min=1),
    crop_px: int = typer.Option(128, "--crop", help="Test image size in px.", min=16),
    source_dir: Path | None = typer.Option(
        None, "--source-dir", help="Folder of photos to hold out from (default: bundled)."
    ),
    out: Path = typer.Option(
        Path("evaluation"), "--out", help="Writes <estimator>.json and caches the test set here."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
) -> None:
    """MAE/MSE of sigma/sigma_max, AbsRel, RMSE, delta<1.25^k: all, textured, per sigma bin."""
    from hdme_focus.core.frame import ImageInputError
    from hdme_focus.estimation.evaluate import (
        evaluate,
        render_table,
        report_filename,
        standard_test_set,
        write_report,
    )
    from hdme_focus.estimation.synthesis import load_test_set

    est = _load(weights, estimator, device)
    try:
        if test_set is not None:
            if not test_set.is_file():
                raise FileNotFoundError(str(test_set))
            data = load_test_set(test_set)
        else:
            with console.status(f"building the held-out test set ({n} images)"):
                data = standard_test_set(n, crop_px, out, source_dir)
    except (ImageInputError, ValueError) as exc:
        raise UserError(str(exc)) from None
    smax = float(data["sigma_max_px"]) if "sigma_max_px" in data else 10.0
    with console.status(f"evaluating {est.name} on {len(data['images'])} images"):
        report = evaluate(est, data, smax)
    console.print(render_table(report))
    path = write_report(report, out / report_filename(est.name))
    console.print(
        f"MAE/sigma_max on textured pixels {report['textured']['mae_norm']:.4f}; "
        f"report written to {path}"
    )
