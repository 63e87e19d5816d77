"""`hdme-focus calibrate | autofocus | depth | demo`: parse, call one procedure, print.

Exit codes: 0 done; 2 bad input (config, ROI, calibration, sweep files); 3 the
device failed; 4 autofocus refused to move (the estimate was NaN, saturated or
low-confidence, or focus lies outside the soft limits); the stage is left
where it was in every non-zero case.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
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

EXIT_REFUSED = 4

EstimatorOption = typer.Option(
    "default",
    "--estimator",
    help="'default' (shipped hdme-lite or paths.weights), 'hdme-tiny' (shipped, faster), "
    "a weights file, or a baseline name.",
)
DeviceOption = typer.Option("auto", "--device", help="Estimator device: auto, cpu, cuda.")
CalibrationOption = typer.Option(
    None,
    "--calibration",
    help="Calibration file. Default: paths.calibration, else <paths.output_dir>/calibration.json.",
)


class FocusRefused(UserError):
    exit_code = EXIT_REFUSED


def _user_errors() -> tuple[type[Exception], ...]:
    """Domain errors whose message is already the one line a user needs."""
    from hdme_focus.calibration.fit import CalibrationError
    from hdme_focus.calibration.model import CalibrationFileError
    from hdme_focus.core.frame import ImageInputError
    from hdme_focus.core.roi import RoiError
    from hdme_focus.drivers.replay import ReplayError
    from hdme_focus.instrument.records import RecordError

    return (
        CalibrationError,
        CalibrationFileError,
        ReplayError,
        ImageInputError,
        RecordError,
        RoiError,
    )


def load_estimator_for(name: str, device: str, config: InstrumentConfig) -> Any:
    """The estimator the user named; 'default' honours paths.weights."""
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


def default_calibration_path(config: InstrumentConfig) -> Path:
    if config.paths.calibration is not None:
        return Path(config.paths.calibration)
    return Path(config.paths.output_dir) / "calibration.json"


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


# --------------------------------------------------------------------------- calibrate


@app.command("calibrate")
@handle_errors
def calibrate_cmd(
    sweep_dir: Path = typer.Argument(..., help="A sweep directory recorded by `hdme-focus sweep`."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Calibration file. Default: where autofocus looks for it."
    ),
    estimator: str = EstimatorOption,
    device: str = DeviceOption,
    config: Path | None = ConfigOption,
) -> None:
    """Fit sigma(z) = sqrt((k (z - z0))^2 + sigma0^2) per ROI of a sweep; write JSON + plot.

    Uses the sweep's <roi>_sigma_px columns when it was recorded with an
    estimator, else estimates the frames now. Regions with too few points, no
    minimum inside the range or a poor fit are left out with the reason; if
    none is usable nothing is written.
    """
    from hdme_focus.instrument.calibrate import calibrate_sweep, plot_calibration

    cfg = get_config(config)
    est = None
    try:
        est = load_estimator_for(estimator, device, cfg)
    except UserError:
        if estimator != "default":
            raise
    try:
        run = calibrate_sweep(sweep_dir, est)
    except _user_errors() as exc:
        raise UserError(str(exc)) from None
    target = out if out is not None else default_calibration_path(cfg)
    path = run.calibration.save(target)
    png = plot_calibration(run, path.with_suffix(".png"))

    table = Table(title=f"V-curve fits ({run.calibration.estimator})", title_justify="left")
    for col in ("ROI", "z0 mm", "k px/mm", "k lens", "sigma0 px", "RMSE px", "R^2", "n", "u mm"):
        table.add_column(col, justify="left" if col == "ROI" else "right")
    for r in run.calibration.rois:
        table.add_row(
            r.name,
            _fmt(r.z0_mm),
            _fmt(r.k_px_per_mm, ".2f"),
            _fmt(r.k_thin_lens_px_per_mm, ".2f"),
            _fmt(r.sigma0_px, ".2f"),
            _fmt(r.rmse_px, ".2f"),
            _fmt(r.r2, ".3f"),
            str(r.n_points),
            _fmt(r.object_distance_mm, ".0f"),
        )
    console.print(table)
    for name, why in run.rejected.items():
        err_console.print(f"[yellow]left out {name}:[/] {why}", highlight=False, soft_wrap=True)
    console.print(f"calibration: {path}", highlight=False)
    console.print(f"plot:        {png}", highlight=False)


# --------------------------------------------------------------------------- autofocus


def _load_calibration(path: Path | None, cfg: InstrumentConfig) -> tuple[Any, Path]:
    """Read and check the calibration against the configured optics and frame size."""
    from hdme_focus.calibration.model import CalibrationFileError, load_calibration

    source = path if path is not None else default_calibration_path(cfg)
    try:
        cal = load_calibration(source)
        frame = (
            None if cfg.camera.driver == "replay" else (cfg.camera.width_px, cfg.camera.height_px)
        )
        return cal.check_matches(source, cfg.optics.lens(), frame), source
    except CalibrationFileError as exc:
        raise UserError(str(exc)) from None


def _check_estimator(cal: Any, source: Path, estimator: Any) -> None:
    """A calibration holds only for the estimator whose blur scale it fitted."""
    from hdme_focus.calibration.model import CalibrationFileError

    try:
        cal.check_matches(source, estimator=getattr(estimator, "name", None))
    except CalibrationFileError as exc:
        raise UserError(str(exc)) from None


@app.command("autofocus")
@handle_errors
def autofocus_cmd(
    roi: str = typer.Option(..., "--roi", help="Region X,Y,W,H in pixels."),
    method: str = typer.Option("hdme", "--method", help="hdme, brent or sweep."),
    direction: str = typer.Option(
        "auto", "--direction", help="hdme: auto (prior if unambiguous, else probe), prior, probe."
    ),
    verify: bool = typer.Option(False, "--verify", help="Capture after the move; report residual."),
    max_tries: int = typer.Option(
        1,
        "--max-tries",
        help="hdme: up to N moves; after each a verify capture and, unless surely in focus, "
        "one capture a few DOF away on the slope of the V-curve (2 captures per extra try).",
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
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    calibration: Path | None = CalibrationOption,
    estimator: str = EstimatorOption,
    device: str = DeviceOption,
    config: Path | None = ConfigOption,
) -> None:
    """Focus one region: HDME from one capture and one move, or a classical search.

    HDME reads the blur, converts it to |z - z0| with the calibration and picks
    the side by --direction. The last successful focus per ROI is kept in
    <paths.output_dir>/autofocus-state.json and serves as the `prior`.
    """
    from hdme_focus.core.roi import parse_roi
    from hdme_focus.instrument import autofocus as af
    from hdme_focus.instrument.devices import open_instrument

    cfg = get_config(config)
    if method not in af.METHODS:
        raise UserError(f"--method {method!r}: choose one of {', '.join(af.METHODS)}")
    if direction not in af.STRATEGIES:
        raise UserError(f"--direction {direction!r}: choose one of {', '.join(af.STRATEGIES)}")
    if max_tries < 1:
        raise UserError(f"--max-tries {max_tries}: must be at least 1")
    if margin is not None and margin < 0:
        raise UserError(f"--margin-px {margin}: must be >= 0")
    if span is not None and not (math.isfinite(span) and span > 0):
        raise UserError(f"--span {span}: must be a positive distance in mm")
    try:
        region = parse_roi(roi)
        if cfg.camera.driver != "replay":
            region.check_inside(cfg.camera.width_px, cfg.camera.height_px)
    except _user_errors() as exc:
        raise UserError(str(exc)) from None

    est: Any = None
    cal: Any = None
    if method == "hdme":
        cal, source = _load_calibration(calibration, cfg)
        est = load_estimator_for(estimator, device, cfg)
        _check_estimator(cal, source, est)

    with open_instrument(cfg) as inst:
        try:
            if method == "hdme":
                opts = af.HdmeOptions(
                    strategy=direction,  # type: ignore[arg-type]
                    verify=verify,
                    max_tries=max_tries,
                    prior_uncertainty_mm=prior_uncertainty,
                    state_file=af.state_path(cfg.paths.output_dir),
                    margin_px=margin,
                )
                result = af.autofocus_hdme(inst, region, est, cal, opts)
            else:
                here = inst.stage.position_mm()
                rng = None if span is None else (here - span / 2, here + span / 2)
                search = af.SearchOptions(range_mm=rng)
                fn = af.autofocus_brent if method == "brent" else af.autofocus_sweep
                result = fn(inst, region, search)
                if verify:
                    console.print(
                        "note: --verify applies to --method hdme", style="yellow", highlight=False
                    )
        except af.AutofocusRefused as exc:
            if as_json and exc.result is not None:
                console.print_json(json.dumps(exc.result.to_json()))
            raise FocusRefused(str(exc)) from None
        except _user_errors() as exc:
            raise UserError(str(exc)) from None
    if as_json:
        console.print_json(json.dumps(result.to_json()))
    else:
        console.print(result.summary_line(), highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- depth


@app.command("depth")
@handle_errors
def depth_cmd(
    side: str = typer.Option(
        "far",
        "--side",
        help="Assume every object is nearer ('near') or farther ('far') than the focused plane.",
    ),
    ply: bool = typer.Option(False, "--ply", help="Also write a PLY point cloud (mm)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output directory. Default: <paths.output_dir>/depth."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    calibration: Path | None = CalibrationOption,
    estimator: str = EstimatorOption,
    device: str = DeviceOption,
    config: Path | None = ConfigOption,
) -> None:
    """One capture -> sigma map -> distance to the focal plane and object distance per pixel.

    One frame cannot tell near from far, so --side states it. Low-texture,
    clipped and out-of-range pixels are masked (confidence.tiff; NaN in
    object_distance_mm.tiff).
    """
    from hdme_focus.instrument.depth import SIDES, measure_depth, write_depth
    from hdme_focus.instrument.devices import open_instrument

    if side not in SIDES:
        raise UserError(f"--side {side!r}: choose 'near' or 'far'")
    cfg = get_config(config)
    cal, source = _load_calibration(calibration, cfg)
    est = load_estimator_for(estimator, device, cfg)
    _check_estimator(cal, source, est)
    target = out if out is not None else Path(cfg.paths.output_dir) / "depth"
    with open_instrument(cfg) as inst:
        try:
            maps = measure_depth(inst, est, cal, side)  # type: ignore[arg-type]
        except _user_errors() as exc:
            raise UserError(str(exc)) from None
    files = write_depth(maps, target, ply=ply, calibration=cal)
    summary = maps.summary()
    if as_json:
        console.print_json(json.dumps({k: v for k, v in summary.items()}, default=str))
        return
    console.print(
        f"depth at {maps.position_mm:.4f} mm (side {side}): "
        f"{summary['confident_fraction']:.0%} confident, object distance "
        f"{_fmt(summary['object_distance_mm_p5'], '.1f')}.."
        f"{_fmt(summary['object_distance_mm_p95'], '.1f')} mm (5-95%), "
        f"median |z - z0| {_fmt(summary['defocus_mm_median'])} mm",
        highlight=False,
    )
    for kind, path in files.items():
        console.print(f"{kind:>18}: {path}", highlight=False)


# --------------------------------------------------------------------------- demo


@app.command("demo")
@handle_errors
def demo_cmd(
    out: Path = typer.Option(Path("hdme-demo"), "--out", "-o", help="Output directory."),
    estimator: str = EstimatorOption,
    device: str = DeviceOption,
    trials: int = typer.Option(3, "--trials", help="Autofocus starts per region."),
    seed: int = typer.Option(0, "--seed", help="Random starting positions."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a demo already in --out."),
    config: Path | None = ConfigOption,
) -> None:
    """Sweep, calibrate, autofocus from random starts and depth on the simulator; report.md."""
    from hdme_focus.instrument.demo import DemoOptions, run_demo

    if trials < 1:
        raise UserError(f"--trials {trials}: must be at least 1")
    cfg = get_config(config)
    est = load_estimator_for(estimator, device, cfg)
    try:
        result = run_demo(
            cfg,
            out,
            est,
            DemoOptions(trials_per_roi=trials, seed=seed),
            say=lambda msg: err_console.print(msg, highlight=False),
            overwrite=overwrite,
        )
    except _user_errors() as exc:
        raise UserError(str(exc)) from None
    stats = result.summary["autofocus"]["by_method"].get("hdme", {})
    if stats:
        console.print(
            f"hdme autofocus: {stats['in_focus_rate']:.0%} of {stats['trials']} trials in focus, "
            f"median {stats['median_captures']:.0f} capture(s), {stats['median_moves']:.0f} "
            f"move(s)",
            highlight=False,
        )
    console.print(f"report: {result.report}", highlight=False)
