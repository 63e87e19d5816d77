"""`hdme-focus sweep`: record focus measures (and blur) across a range of stage positions."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hdme_focus.cli.common import (
    ConfigOption,
    DeviceOption,
    UserError,
    console,
    err_console,
    get_config,
    handle_errors,
    load_estimator,
)
from hdme_focus.estimation.devices import Device
from hdme_focus.estimation.registry import DEFAULT_ESTIMATOR

if TYPE_CHECKING:
    from hdme_focus.config import InstrumentConfig
    from hdme_focus.core.roi import Roi
    from hdme_focus.estimation.base import DefocusEstimator
    from hdme_focus.records import SweepRecord


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
    from hdme_focus.core.roi import parse_roi

    if not specs:
        return default
    return {f"roi{i + 1}": parse_roi(s) for i, s in enumerate(specs)}


def _estimator(name: str, device: Device, config: InstrumentConfig) -> DefocusEstimator | None:
    """None for 'none' (focus measures only); anything else goes to the one loader."""
    if name.lower() == "none":
        return None
    return load_estimator(None if name == "default" else name, device, config=config)


def _summary(record: SweepRecord) -> None:
    """Best focus per ROI: a table on a terminal, CSV when piped (no column cut)."""
    from hdme_focus.cli.output import print_table
    from hdme_focus.focus_measures import DEFAULT_MEASURES, best_index
    from hdme_focus.instrument.sweep import SIGMA_QUANTITY

    measures = [m for m in DEFAULT_MEASURES if any(m in record.quantities(r) for r in record.rois)]
    headers = ["ROI", "x,y,w,h", *measures]
    with_sigma = any(SIGMA_QUANTITY in record.quantities(r) for r in record.rois)
    if with_sigma:
        headers.append("min sigma_px")
    x = record.positions_mm
    rows: list[list[str]] = []
    for name, roi in record.rois.items():
        cells = [name, roi.spec]
        for m in measures:
            i = best_index(record.roi_values(name, m)) if m in record.quantities(name) else -1
            cells.append(f"{x[i]:.3f}" if i >= 0 else "-")
        if with_sigma:
            sig = record.roi_values(name, SIGMA_QUANTITY)
            i = best_index(-sig)
            cells.append(f"{sig[i]:.2f} @ {x[i]:.3f}" if i >= 0 else "-")
        rows.append(cells)
    print_table(console, "best focus per ROI (stage position, mm)", headers, rows)


@handle_errors(moves_stage=True)
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
        help=f"Add <roi>_sigma_px with an estimator: {DEFAULT_ESTIMATOR} (or 'default', "
        "which honours paths.weights), hdme-tiny, a baseline, a weights file; 'none' records "
        "focus measures only.",
    ),
    device: Device = DeviceOption,
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
    from hdme_focus.instrument.sweep import check_sweep, default_rois, plan_positions, run_sweep
    from hdme_focus.records import FRAMES_DIR, MANIFEST, TABLE, load_sweep

    cfg = get_config(config)
    est = _estimator(estimator, device, cfg)
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = cfg.paths.output_dir / f"sweep-{stamp}"
    with open_instrument(cfg) as inst:
        lo, hi = _range(cfg, inst.stage.position_mm(), start, stop, span)
        try:
            positions = plan_positions(lo, hi, step)
        except ValueError as exc:
            raise UserError(f"--step {step}: {exc}") from None
        if len(positions) < 2:
            raise UserError(
                f"--step {step} mm: larger than the range {lo:.4f}..{hi:.4f} mm, a single "
                "frame is no sweep; use a smaller --step or a wider range"
            )
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
            disable=not err_console.is_terminal,
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

    record = load_sweep(out)
    _summary(record)
    png = plot_sweep(record) if plot else None
    console.print(f"frames:   {out / FRAMES_DIR} ({len(record)} TIFF)", highlight=False)
    console.print(f"table:    {out / TABLE}", highlight=False)
    console.print(f"manifest: {out / MANIFEST}", highlight=False)
    if png is not None:
        console.print(f"plot:     {png}", highlight=False)
