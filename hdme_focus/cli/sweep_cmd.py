"""`hdme-focus sweep`: record focus measures (and blur) across a range of stage positions."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hdme_focus.cli import (
    ConfigOption,
    UserError,
    app,
    console,
    err_console,
    get_config,
    handle_errors,
)
from hdme_focus.config import InstrumentConfig
from hdme_focus.core.roi import Roi, RoiError, parse_roi
from hdme_focus.focus_measures import DEFAULT_MEASURES, best_index


def _range(
    config: InstrumentConfig,
    current_mm: float,
    start: float | None,
    stop: float | None,
    span: float | None,
) -> tuple[float, float]:
    """Resolve --start/--stop/--span; default is the full soft-limit range."""
    if span is not None:
        if start is not None or stop is not None:
            raise UserError("use either --span or --start/--stop, not both")
        if not (math.isfinite(span) and span > 0):
            raise UserError(f"--span = {span}: must be a positive distance in mm")
        return current_mm - span / 2.0, current_mm + span / 2.0
    lo = config.stage.min_mm if start is None else start
    hi = config.stage.max_mm if stop is None else stop
    return lo, hi


def _rois(specs: list[str], default: dict[str, Roi]) -> dict[str, Roi]:
    if not specs:
        return default
    return {f"roi{i + 1}": parse_roi(s) for i, s in enumerate(specs)}


def _estimator(name: str, device: str, config: InstrumentConfig) -> Any:
    """None for 'none'; 'default' is paths.weights or the shipped model; else a name or file."""
    if name.lower() == "none":
        return None
    from hdme_focus.estimation.registry import load_estimator

    target: str | Path | None = None if name == "default" else name
    if target is None and config.paths.weights is not None:
        target = config.paths.weights
    try:
        return load_estimator(target, device=device)
    except FileNotFoundError as exc:
        raise UserError(f"--estimator {name}: weights file not found: {exc}") from None
    except (ValueError, KeyError) as exc:
        raise UserError(f"--estimator {name}: {exc}") from None


def _summary(record: Any) -> Table:
    from hdme_focus.instrument.sweep import SIGMA_QUANTITY

    table = Table(title="best focus per ROI (stage position, mm)", title_justify="left")
    table.add_column("ROI")
    table.add_column("x,y,w,h")
    measures = [m for m in DEFAULT_MEASURES if any(m in record.quantities(r) for r in record.rois)]
    for m in measures:
        table.add_column(m, justify="right")
    with_sigma = any(SIGMA_QUANTITY in record.quantities(r) for r in record.rois)
    if with_sigma:
        table.add_column("min sigma_px", justify="right")
    x = record.positions_mm
    for name, roi in record.rois.items():
        cells = [name, roi.spec]
        for m in measures:
            i = best_index(record.roi_values(name, m)) if m in record.quantities(name) else -1
            cells.append(f"{x[i]:.3f}" if i >= 0 else "-")
        if with_sigma:
            sig = record.roi_values(name, SIGMA_QUANTITY)
            i = best_index(-sig)
            cells.append(f"{sig[i]:.2f} @ {x[i]:.3f}" if i >= 0 else "-")
        table.add_row(*cells)
    return table


@app.command("sweep")
@handle_errors
def sweep(
    step: float = typer.Option(0.02, "--step", help="Distance between frames, mm."),
    start: float | None = typer.Option(None, "--start", help="First position, mm."),
    stop: float | None = typer.Option(None, "--stop", help="Last position, mm."),
    span: float | None = typer.Option(
        None, "--span", help="Range width in mm, centred on the current position."
    ),
    roi: list[str] = typer.Option(
        [],
        "--roi",
        help="Region X,Y,W,H in pixels (repeatable). Default: the scene's named regions, "
        "else the centre quarter.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Sweep directory. Default: <paths.output_dir>/sweep-<time>."
    ),
    config: Path | None = ConfigOption,
    estimator: str = typer.Option(
        "none",
        "--estimator",
        help="Add <roi>_sigma_px: 'default' (HDME-Net), a baseline, a weights file or 'none'.",
    ),
    device: str = typer.Option("auto", "--device", help="Estimator device: auto, cpu, cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a sweep already in --out."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write sweep.png at the end."),
) -> None:
    """Move through a range, capture at each position, record focus measures per ROI.

    Frames (TIFF), sweep.csv and sweep.json are on disk before each next move;
    sweep.png plots each ROI's curves against position. Ctrl-C or a device
    fault stops the stage and leaves a valid partial sweep.
    """
    from hdme_focus.instrument.devices import open_instrument
    from hdme_focus.instrument.plots import plot_sweep
    from hdme_focus.instrument.records import RecordError, load_sweep
    from hdme_focus.instrument.sweep import check_sweep, default_rois, plan_positions, run_sweep

    cfg = get_config(config)
    est = _estimator(estimator, device, cfg)
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = cfg.paths.output_dir / f"sweep-{stamp}"
    try:
        with open_instrument(cfg) as inst:
            lo, hi = _range(cfg, inst.stage.position_mm(), start, stop, span)
            try:
                positions = plan_positions(lo, hi, step)
            except ValueError as exc:
                raise UserError(str(exc)) from None
            rois = _rois(roi, default_rois(inst))
            check_sweep(inst, positions, rois, out, overwrite)
            with Progress(
                TextColumn("[bold]sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[pos]}"),
                TimeElapsedColumn(),
                console=err_console,
                transient=False,
            ) as bar:
                task = bar.add_task("sweep", total=len(positions), pos="")

                def progress(done: int, total: int, position_mm: float) -> None:
                    bar.update(task, completed=done, pos=f"{position_mm:8.4f} mm")

                try:
                    run_sweep(
                        inst,
                        positions,
                        rois,
                        out,
                        extra=None,
                        estimator=est,
                        progress=progress,
                        overwrite=overwrite,
                        metadata={"step_mm": step},
                    )
                except BaseException as exc:
                    for note in getattr(exc, "__notes__", []):
                        err_console.print(note, highlight=False, soft_wrap=True)
                    raise
    except (RoiError, RecordError) as exc:
        raise UserError(str(exc)) from None

    record = load_sweep(out)
    console.print(_summary(record))
    png = plot_sweep(record) if plot else None
    console.print(f"frames:   {out / 'frames'} ({len(record)} TIFF)", highlight=False)
    console.print(f"table:    {out / 'sweep.csv'}", highlight=False)
    console.print(f"manifest: {out / 'sweep.json'}", highlight=False)
    if png is not None:
        console.print(f"plot:     {png}", highlight=False)
