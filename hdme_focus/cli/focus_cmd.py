"""`hdme-focus calibrate | autofocus | depth | demo`: parse, call one procedure, print.

Exit codes: 0 done; 2 bad input (config, ROI, calibration, sweep files); 3 the
device failed; 4 autofocus refused to move (the estimate was NaN, saturated or
low-confidence, focus lies outside the soft limits, or a search did not
bracket focus), the stage left where it was (a search returns to its start);
5 `autofocus --verify` moved, measured, and the region is NOT in focus;
128 + N a signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP) stopped the stage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hdme_focus.cli.common import (
    ConfigOption,
    DeviceOption,
    Direction,
    EstimatorOption,
    Method,
    Side,
    UserError,
    console,
    err_console,
    get_config,
    handle_errors,
    load_estimator,
)
from hdme_focus.core.errors import EXIT_NOT_IN_FOCUS
from hdme_focus.estimation.devices import Device

if TYPE_CHECKING:
    from hdme_focus.calibration.model import Calibration
    from hdme_focus.config import InstrumentConfig
    from hdme_focus.estimation.base import DefocusEstimator

CalibrationOption = typer.Option(
    None,
    "--calibration",
    help="Calibration file. Default: paths.calibration, else <paths.output_dir>/calibration.json.",
)


def default_calibration_path(config: InstrumentConfig) -> Path:
    if config.paths.calibration is not None:
        return Path(config.paths.calibration)
    return Path(config.paths.output_dir) / "calibration.json"


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


# --------------------------------------------------------------------------- calibrate


@handle_errors
def calibrate_cmd(
    sweep_dir: Path = typer.Argument(..., help="A sweep directory recorded by `hdme-focus sweep`."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Calibration file. Default: where autofocus looks for it."
    ),
    estimator: str | None = EstimatorOption,
    device: Device = DeviceOption,
    config: Path | None = ConfigOption,
) -> None:
    """Fit sigma(z) = sqrt((k (z - z0))^2 + sigma0^2) per ROI of a sweep; write JSON + plot.

    Uses the sweep's <roi>_sigma_px columns when it was recorded with the same
    estimator (or none is named), else estimates the frames now. Regions with too
    few points, no minimum inside the range, a poor fit, a slope far from the
    configured optics, an uncertain focus or focus outside the soft limits are
    left out with the reason; if none is usable nothing is written. Without
    --out each sweep's calibration is kept in <paths.output_dir>/calibrations/
    and becomes the active one; the line says which calibration it replaced.
    """
    from hdme_focus.calibration.store import save_calibration
    from hdme_focus.cli.output import print_table, progress_bar
    from hdme_focus.instrument.calibrate import calibrate_sweep, plot_calibration

    cfg = get_config(config)
    est = None
    try:
        est = load_estimator(estimator, device, config=cfg)
    except UserError:
        if estimator is not None:
            raise
    with progress_bar(err_console, "estimating frames") as progress:
        run = calibrate_sweep(sweep_dir, est, progress=progress, prefer_recorded=estimator is None)
    saved = save_calibration(
        run.calibration,
        active=default_calibration_path(cfg),
        output_dir=Path(cfg.paths.output_dir),
        out=out,
    )
    path = saved.path
    png = plot_calibration(run, path.with_suffix(".png"))
    if saved.kept is not None:
        plot_calibration(run, saved.kept.with_suffix(".png"))

    headers = ["ROI", "z0 mm", "+/- mm", "k px/mm", "k lens", "sigma0 px", "c px", "RMSE px"]
    rows = [
        [
            r.name,
            _fmt(r.z0_mm),
            _fmt(r.z0_stderr_mm),
            _fmt(r.k_px_per_mm, ".2f"),
            _fmt(r.k_thin_lens_px_per_mm, ".2f"),
            _fmt(r.sigma0_px, ".2f"),
            _fmt(r.saturation_px, ".1f"),  # the reading's compression far out; - for none
            _fmt(r.rmse_px, ".2f"),
            _fmt(r.r2, ".3f"),
            str(r.n_points),
            _fmt(r.object_distance_mm, ".0f"),
        ]
        for r in run.calibration.rois
    ]
    print_table(
        console,
        f"V-curve fits ({run.calibration.estimator})",
        [*headers, "R^2", "n", "u mm"],
        rows,
    )
    if run.record.status != "complete":
        err_console.print(
            f"[yellow]warning:[/] the sweep is {run.record.status!r}, not complete "
            f"({run.record.reason}); check each region's fit or record it again",
            highlight=False,
            soft_wrap=True,
        )
    for r in run.calibration.rois:
        for why in r.warnings:
            err_console.print(
                f"[yellow]warning {r.name}:[/] {why}", highlight=False, soft_wrap=True
            )
    for name, why in run.rejected.items():
        err_console.print(f"[yellow]left out {name}:[/] {why}", highlight=False, soft_wrap=True)
    source = "the sweep's recorded sigma_px" if run.reused_sigmas else "estimated now"
    console.print(f"blur:        {source}", highlight=False)
    console.print(f"calibration: {path}", highlight=False)
    if saved.kept is not None:
        console.print(f"kept as:     {saved.kept}", highlight=False)
    if saved.replaced is not None:
        console.print(f"replaces:    {saved.replaced}", highlight=False, soft_wrap=True)
    console.print(f"plot:        {png}", highlight=False)


# --------------------------------------------------------------------------- autofocus


def checked_calibration(source: Path, cfg: InstrumentConfig) -> Calibration:
    """The calibration file at `source`, checked against the configured optics and frame size."""
    from hdme_focus.calibration.model import load_calibration

    frame = None if cfg.camera.driver == "replay" else (cfg.camera.width_px, cfg.camera.height_px)
    return load_calibration(source).check_matches(source, cfg.optics.lens(), frame)


def _calibration_and_estimator(
    path: Path | None, cfg: InstrumentConfig, estimator: str | None, device: Device
) -> tuple[Calibration, DefocusEstimator]:
    """The calibration, checked against the optics and frame size, and the estimator it fits.

    A calibration holds only for the estimator whose blur scale it fitted.
    """
    source = path if path is not None else default_calibration_path(cfg)
    cal = checked_calibration(source, cfg)
    est = load_estimator(estimator, device, config=cfg)
    cal.check_matches(source, estimator=est.name)
    return cal, est


# the command's spelling of FocusRequest's fields, for its messages
_CLI_SPELLING = {
    "direction": "--direction",
    "max_tries": "--max-tries",
    "margin_px": "--margin-px",
    "span_mm": "--span",
    "prior_uncertainty_mm": "--prior-uncertainty",
}


@handle_errors(moves_stage=True)
def autofocus_cmd(
    roi: str = typer.Option(..., "--roi", help="Region X,Y,W,H in pixels."),
    method: Method = typer.Option(Method.hdme, "--method", help="Single-capture or a search."),
    direction: Direction = typer.Option(
        Direction.auto,
        "--direction",
        help="hdme: auto (prior if unambiguous, else probe), prior, probe, or chroma (the side "
        "from axial colour in one RGB frame; auto when it abstains).",
    ),
    verify: bool = typer.Option(False, "--verify", help="Capture after the move; report residual."),
    max_tries: int = typer.Option(
        1,
        "--max-tries",
        help="hdme: up to N moves; after each a verify capture and, unless surely in focus, "
        "one capture a few DOF away on the slope of the V-curve (2 captures per extra try).",
    ),
    refine: bool = typer.Option(
        True,
        "--refine/--no-refine",
        help="hdme: after the jump, read a focus measure at a step either side of the landing "
        "and move to its peak (falls back to Brent within the soft limits when the blur "
        "reading and the measure disagree). --no-refine: the single jump alone.",
    ),
    global_calibration: bool = typer.Option(
        False,
        "--global-calibration",
        help="hdme: read the blur with the calibration over all fitted regions, not the "
        "region's own (a sample or region the calibration never saw; said on the line).",
    ),
    span: float | None = typer.Option(
        None, "--span", help="brent/sweep: search range in mm centred on the current position."
    ),
    prior_uncertainty: float | None = typer.Option(
        None, "--prior-uncertainty", help="hdme: 1-sigma uncertainty of the prior focus, mm."
    ),
    margin: int | None = typer.Option(
        None,
        "--margin-px",
        help="hdme: estimate on the ROI plus this margin instead of the whole frame (faster).",
    ),
    widen: bool = typer.Option(
        False,
        "--widen",
        help="brent/sweep: if focus is not bracketed by --span, slide the window towards it "
        "(within the soft limits).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    calibration: Path | None = CalibrationOption,
    estimator: str | None = EstimatorOption,
    device: Device = DeviceOption,
    config: Path | None = ConfigOption,
) -> None:
    """Focus one region: HDME from one capture and one move, or a classical search.

    Exit codes: 0 focused; 2 bad input; 3 device failure; 4 refused (low
    confidence, focus outside the soft limits, or a search whose best reading is
    on the window's edge: "focus not bracketed"); 5 `--verify` measured the
    result and it is NOT in focus.

    HDME reads the blur, converts it to |z - z0| with the calibration and picks
    the side by --direction; with --refine (default) it then reads a focus
    measure a step either side of the landing and moves to its peak. The last
    successful focus per ROI is kept in <paths.output_dir>/autofocus-state.json
    and serves as the `prior`.
    """
    from hdme_focus.core.roi import parse_roi
    from hdme_focus.instrument.devices import open_instrument
    from hdme_focus.instrument.focus_request import NO_REFINE, FocusRequest, run_focus
    from hdme_focus.instrument.prior import state_path
    from hdme_focus.instrument.session import AutofocusRefused, AutofocusResult

    cfg = get_config(config)
    request = FocusRequest(
        method=method.value,
        direction=direction.value,
        verify=verify,
        refine=refine,
        max_tries=max_tries,
        global_calibration=global_calibration,
        prior_uncertainty_mm=prior_uncertainty,
        margin_px=margin,
        span_mm=span,
        widen=widen,
    )
    request.check(_CLI_SPELLING | {NO_REFINE: "--no-refine"})
    region = parse_roi(roi)
    if cfg.camera.driver != "replay":
        region.check_inside(cfg.camera.width_px, cfg.camera.height_px)
    hdme = None
    if method is Method.hdme:
        hdme = _calibration_and_estimator(calibration, cfg, estimator, device)

    result: AutofocusResult
    with open_instrument(cfg) as inst:
        try:
            cal_path = calibration or default_calibration_path(cfg)
            result = run_focus(
                inst, region, request, hdme, state_path(cfg.paths.output_dir), cal_path
            )
            if verify and method is not Method.hdme:
                console.print(
                    "note: --verify applies to --method hdme", style="yellow", highlight=False
                )
        except AutofocusRefused as exc:
            if as_json and exc.result is not None:
                console.print_json(json.dumps(exc.result.to_json()))
            raise  # a RefusedError: one line, exit 4
    if as_json:
        console.print_json(json.dumps(result.to_json()))
    else:
        console.print(result.summary_line(), highlight=False, soft_wrap=True)
    if result.in_focus is False:
        raise typer.Exit(EXIT_NOT_IN_FOCUS)


# --------------------------------------------------------------------------- depth


@handle_errors
def depth_cmd(
    side: Side = typer.Option(
        Side.far,
        "--side",
        help="Assume every object is nearer ('near') or farther ('far') than the focused plane.",
    ),
    ply: bool = typer.Option(False, "--ply", help="Also write a PLY point cloud (mm)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output directory. Default: <paths.output_dir>/depth."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    calibration: Path | None = CalibrationOption,
    estimator: str | None = EstimatorOption,
    device: Device = DeviceOption,
    config: Path | None = ConfigOption,
) -> None:
    """One capture -> sigma map -> distance to the focal plane and object distance per pixel.

    One frame cannot tell near from far, so --side states it. Low-texture,
    clipped and out-of-range pixels are masked (confidence.tiff; NaN in
    object_distance_mm.tiff).
    """
    from hdme_focus.instrument.depth import measure_depth, write_depth
    from hdme_focus.instrument.devices import open_instrument

    cfg = get_config(config)
    cal, est = _calibration_and_estimator(calibration, cfg, estimator, device)
    target = out if out is not None else Path(cfg.paths.output_dir) / "depth"
    with open_instrument(cfg) as inst:
        maps = measure_depth(inst, est, cal, side.value)
    files = write_depth(maps, target, ply=ply, calibration=cal)
    summary = maps.summary()
    if as_json:
        console.print_json(json.dumps({k: v for k, v in summary.items()}, default=str))
        return
    console.print(
        f"depth at {maps.position_mm:.4f} mm (side {side.value}): "
        f"{summary['confident_fraction']:.0%} confident, object distance "
        f"{_fmt(summary['object_distance_mm_p5'], '.1f')}.."
        f"{_fmt(summary['object_distance_mm_p95'], '.1f')} mm (5-95%), "
        f"median |z - z0| {_fmt(summary['defocus_mm_median'])} mm",
        highlight=False,
    )
    for kind, path in files.items():
        console.print(f"{kind:>18}: {path}", highlight=False)


# --------------------------------------------------------------------------- demo


@handle_errors(moves_stage=True)
def demo_cmd(
    out: Path = typer.Option(Path("hdme-demo"), "--out", "-o", help="Output directory."),
    estimator: str | None = EstimatorOption,
    device: Device = DeviceOption,
    trials: int = typer.Option(3, "--trials", help="Autofocus starts per region."),
    seed: int = typer.Option(0, "--seed", help="Random starting positions."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a demo already in --out."),
    config: Path | None = ConfigOption,
) -> None:
    """Sweep, calibrate, autofocus from random starts and depth on the simulator; report.md."""
    from hdme_focus.cli.output import progress_bar
    from hdme_focus.instrument.demo import DemoOptions, run_demo

    if trials < 1:
        raise UserError(f"--trials {trials}: must be at least 1")
    cfg = get_config(config)
    est = load_estimator(estimator, device, config=cfg)
    with progress_bar(err_console, "demo") as progress:
        result = run_demo(
            cfg,
            out,
            est,
            DemoOptions(trials_per_roi=trials, seed=seed),
            say=lambda msg: err_console.print(msg, highlight=False),
            overwrite=overwrite,
            progress=progress,
        )
    by_method = result.summary["autofocus"]["by_method"]
    for method, label in (("hybrid", "autofocus (default, refined)"), ("hdme", "single jump")):
        stats = by_method.get(method, {})
        if stats:
            console.print(
                f"{label}: {stats['in_focus_rate']:.0%} of {stats['trials']} trials in focus, "
                f"median {stats['median_captures']:.0f} capture(s), "
                f"{stats['median_moves']:.0f} move(s)",
                highlight=False,
            )
    console.print(f"report: {result.report}", highlight=False)
