"""The README's main job: sweep, calibrate, autofocus and depth on the simulated instrument.

Everything runs on the simulator, whose ground truth (each region's in-focus
position, each pixel's object distance) turns the run into a measurement: the
report states the focus error of every autofocus trial in depth-of-focus units
next to the captures, moves and time it took, for HDME and for the classical
Brent and sweep searches started from the same positions.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hdme_focus.config import ConfigError, InstrumentConfig
from hdme_focus.core.atomic import json_safe, write_json_atomic, write_text_atomic
from hdme_focus.core.roi import Roi
from hdme_focus.drivers.sim import SimCamera, SimStage
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.instrument.autofocus import HdmeOptions, autofocus_hdme
from hdme_focus.instrument.calibrate import calibrate_sweep, plot_calibration
from hdme_focus.instrument.depth import measure_depth, write_depth
from hdme_focus.instrument.devices import Instrument, open_instrument
from hdme_focus.instrument.hybrid import autofocus_hybrid
from hdme_focus.instrument.plots import plot_sweep
from hdme_focus.instrument.search import SearchOptions, autofocus_brent, autofocus_sweep
from hdme_focus.instrument.session import AutofocusRefused, AutofocusResult
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.records import OutputExistsError, load_sweep

Say = Callable[[str], None]
# `autofocus`'s default (the jump, then the focus-measure refinement), the jump alone
# (`--no-refine`), and the classical searches
DEMO_METHODS = ("hybrid", "hdme", "brent", "sweep")


@dataclass
class DemoOptions:
    sweep_start_mm: float = 0.4
    sweep_stop_mm: float = 2.6
    sweep_step_mm: float = 0.05
    trials_per_roi: int = 3
    start_within_dof: float = 10.0  # random starts within +- this many DOF of true focus
    depth_position_mm: float = 0.85  # below every element's focus: side "near"
    seed: int = 0
    classical: bool = True  # also run brent and sweep from the same starts


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    summary: dict[str, Any] = field(default_factory=dict)


def ground_truth(instrument: Instrument, roi: Roi) -> tuple[float, float]:
    """The simulator's in-focus position of a region and its true depth of focus (1 / k)."""
    camera: Any = instrument.camera
    if not hasattr(camera, "focus_position_mm"):
        raise ConfigError("demo runs on the simulated instrument; set stage/camera driver = 'sim'")
    z0 = float(camera.focus_position_mm(roi.as_tuple()))
    distance = float(np.median(roi.slice(camera.true_distance_mm())))
    return z0, 1.0 / camera.lens.slope_px_per_mm(distance)


Attempt = Callable[[], AutofocusResult]


def run_from(
    instrument: Instrument, start_mm: float, attempt: Attempt, noise_seed: int | None = None
) -> AutofocusResult:
    """Travel to the start, run one autofocus; a refusal is a result too (no move).

    noise_seed: on the simulator, restart its noise there (`SimCamera.reseed`), so that
    methods given the same seed for one start are compared on the same noise.
    """
    instrument.stage.travel_to(start_mm)
    if noise_seed is not None:
        for device in (instrument.camera, instrument.raw_stage):
            if isinstance(device, (SimCamera, SimStage)):
                device.reseed(noise_seed)
    try:
        return attempt()
    except AutofocusRefused as exc:
        if exc.result is None:
            raise
        return exc.result


def trial_row(
    result: AutofocusResult, label: str, roi_name: str, truth_mm: float, dof_mm: float
) -> dict[str, Any]:
    """One trial scored against the truth, errors in depth-of-focus units."""
    err = (result.final_mm - truth_mm) / dof_mm if math.isfinite(result.final_mm) else math.nan
    wrong = None  # only meaningful when the start was clearly out of focus
    if (
        result.method == "hdme"
        and result.moves > 0
        and abs(result.start_mm - truth_mm) > 0.5 * dof_mm
    ):
        wrong = bool((result.final_mm - result.start_mm) * (truth_mm - result.start_mm) < 0)
    return {
        "roi": roi_name,
        "method": label,
        "direction": result.direction,
        "start_mm": result.start_mm,
        "start_dof": (result.start_mm - truth_mm) / dof_mm,
        "final_mm": result.final_mm,
        "true_focus_mm": truth_mm,
        "dof_mm": dof_mm,
        "error_dof": err,
        "in_focus": bool(abs(err) <= 0.5) if math.isfinite(err) else False,
        "wrong_direction": wrong,
        "captures": result.captures,
        "moves": result.moves,
        "device_time_s": result.device_time_s,
        "compute_time_s": result.compute_time_s,
        "refused": result.refused,
    }


def method_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary of one method's trials (refusals count as not in focus)."""
    if not rows:
        return {}
    err = np.asarray([abs(r["error_dof"]) for r in rows], dtype=np.float64)
    wrong = [r["wrong_direction"] for r in rows if r["wrong_direction"] is not None]
    return {
        "trials": len(rows),
        "in_focus_rate": float(np.mean([r["in_focus"] for r in rows])),
        "median_abs_error_dof": float(np.nanmedian(err)) if np.any(np.isfinite(err)) else None,
        "p95_abs_error_dof": float(np.nanpercentile(err, 95)) if np.any(np.isfinite(err)) else None,
        "wrong_direction_rate": float(np.mean(wrong)) if wrong else 0.0,
        "median_captures": float(np.median([r["captures"] for r in rows])),
        "median_moves": float(np.median([r["moves"] for r in rows])),
        "median_device_time_s": float(np.median([r["device_time_s"] for r in rows])),
        "median_compute_time_s": float(np.median([r["compute_time_s"] for r in rows])),
        "refused": int(sum(r["refused"] is not None for r in rows)),
    }


def search_options(start_mm: float, dof_mm: float) -> SearchOptions:
    """Classical searches: +-12 DOF around the start, Brent tolerance 0.1 DOF."""
    return SearchOptions(
        range_mm=(start_mm - 12 * dof_mm, start_mm + 12 * dof_mm), xatol_mm=0.1 * dof_mm
    )


def run_demo(
    config: InstrumentConfig,
    out_dir: Path | str,
    estimator: DefocusEstimator,
    options: DemoOptions | None = None,
    say: Say | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run the whole tour into out_dir and write report.md (+ demo.json, plots).

    `progress(done, total)` is called per frame of the sweep, per frame of the
    calibration and per autofocus trial (each phase counts from 0; `say` names it).
    """
    tick = progress or (lambda done, total: None)
    opts = options or DemoOptions()
    log: Say = say or (lambda _msg: None)
    out = Path(out_dir)
    if config.stage.driver != "sim" or config.camera.driver != "sim":
        raise ConfigError("demo runs on the simulated instrument; set stage/camera driver = 'sim'")
    if (out / "report.md").exists() and not overwrite:
        raise OutputExistsError(out, "a demo report")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    noise_rng = np.random.default_rng([opts.seed, 1])  # apart, so the starts stay as they were
    t_start = time.perf_counter()
    summary: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "estimator": estimator.name,
    }

    with open_instrument(config) as inst:
        rois = default_rois(inst)
        # 1. sweep
        positions = plan_positions(opts.sweep_start_mm, opts.sweep_stop_mm, opts.sweep_step_mm)
        log(f"sweep: {len(positions)} frames, {len(rois)} regions, estimating blur per frame")
        t0 = time.perf_counter()
        sweep_dir = run_sweep(
            inst,
            positions,
            rois,
            out / "sweep",
            estimator=estimator,
            overwrite=overwrite,
            metadata={"step_mm": opts.sweep_step_mm},
            progress=lambda done, total, _position_mm: tick(done, total),
        )
        summary["sweep"] = {"frames": len(positions), "wall_s": time.perf_counter() - t0}

        # 2. calibrate
        log("calibrate: fitting a V-curve per region")
        cal_run = calibrate_sweep(sweep_dir, estimator, progress=tick)
        cal = cal_run.calibration
        cal_path = cal.save(out / "calibration.json")
        plot_calibration(cal_run, out / "calibration.png")
        fits = []
        for r in cal.rois:
            truth = ground_truth(inst, Roi(*r.roi))[0] if r.roi else math.nan
            fits.append({**r.model_dump(), "true_z0_mm": truth})
        summary["calibration"] = {"file": str(cal_path), "rois": fits, "rejected": cal_run.rejected}

        # 3. autofocus from random starts
        rows: list[dict[str, Any]] = []
        calibrated = {r.name for r in cal.rois}
        trial_rois = {n: roi for n, roi in rois.items() if n in calibrated}
        log(f"autofocus: {opts.trials_per_roi} random starts for each of {len(trial_rois)} regions")
        n_trials, done = len(trial_rois) * opts.trials_per_roi, 0
        for name, roi in trial_rois.items():
            truth, dof = ground_truth(inst, roi)
            lo = max(inst.stage.min_mm, truth - opts.start_within_dof * dof)
            hi = min(inst.stage.max_mm, truth + opts.start_within_dof * dof)
            for _ in range(opts.trials_per_roi):
                start = float(rng.uniform(lo, hi))
                noise_seed = int(noise_rng.integers(2**31))  # one noise for all methods
                search = search_options(start, dof)
                auto = HdmeOptions("auto")
                attempts: dict[str, Attempt] = {
                    "hybrid": partial(autofocus_hybrid, inst, roi, estimator, cal, auto),
                    "hdme": partial(autofocus_hdme, inst, roi, estimator, cal, auto),
                }
                if opts.classical:
                    attempts["brent"] = partial(autofocus_brent, inst, roi, search)
                    attempts["sweep"] = partial(autofocus_sweep, inst, roi, search)
                for label, attempt in attempts.items():
                    result = run_from(inst, start, attempt, noise_seed)
                    rows.append(trial_row(result, label, name, truth, dof))
                done += 1
                tick(done, n_trials)
        summary["autofocus"] = {
            "trials": rows,
            "by_method": {
                m: method_stats([r for r in rows if r["method"] == m]) for m in DEMO_METHODS
            },
        }

        # 4. depth from one frame
        log(f"depth: one frame at {opts.depth_position_mm:.2f} mm (side 'near')")
        inst.stage.travel_to(opts.depth_position_mm)
        maps = measure_depth(inst, estimator, cal, side="near")
        write_depth(maps, out / "depth", ply=False, calibration=cal)
        truth_u = inst.camera.true_distance_mm()  # type: ignore[attr-defined]
        err = np.abs(maps.object_distance_mm - truth_u)[maps.confident]
        rel = err / truth_u[maps.confident]
        summary["depth"] = {
            **maps.summary(),
            "median_abs_error_mm": float(np.nanmedian(err)) if err.size else None,
            "median_rel_error": float(np.nanmedian(rel)) if rel.size else None,
        }
        plot_sweep(load_sweep(sweep_dir))

    summary["wall_s"] = time.perf_counter() - t_start
    write_json_atomic(out / "demo.json", json_safe(summary))
    report = out / "report.md"
    write_text_atomic(report, render_report(summary))
    return DemoResult(out, report, summary)


def _f(v: Any, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def render_report(s: dict[str, Any]) -> str:
    """The Markdown report: what ran, with the numbers and the plots."""
    lines = [
        "# hdme-focus demo",
        "",
        f"Simulated instrument (default configuration), estimator `{s['estimator']}`, "
        f"{s['created']}, {s['machine']}; total wall time {s['wall_s']:.1f} s.",
        "",
        "## 1. Sweep",
        "",
        f"{s['sweep']['frames']} frames recorded with the blur estimated per region "
        f"({s['sweep']['wall_s']:.1f} s): `sweep/` (frames, sweep.csv, sweep.json, sweep.png).",
        "",
        "![sweep](sweep/sweep.png)",
        "",
        "## 2. Calibration",
        "",
        "V-curve sigma(z) = sqrt((k (z - z0))^2 + sigma0^2) per region (robust fit), read as "
        "sigma / sqrt(1 + (sigma / c)^2) where the estimator's reading compresses far from focus "
        "(c: its saturation; - where the plain curve fits); the true z0 is the simulator's "
        "ground truth, k (thin lens) what the configured optics predict.",
        "",
        "| region | z0 (mm) | true z0 (mm) | k (px/mm) | k thin lens | sigma0 (px) | c (px) "
        "| RMSE (px) | R^2 | points | u (mm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["calibration"]["rois"]:
        lines.append(
            f"| {r['name']} | {_f(r['z0_mm'], '.4f')} | {_f(r['true_z0_mm'], '.4f')} "
            f"| {_f(r['k_px_per_mm'], '.2f')} | {_f(r['k_thin_lens_px_per_mm'], '.2f')} "
            f"| {_f(r['sigma0_px'], '.2f')} | {_f(r['saturation_px'], '.1f')} "
            f"| {_f(r['rmse_px'], '.2f')} | {_f(r['r2'], '.3f')} "
            f"| {r['n_points']} | {_f(r['object_distance_mm'], '.0f')} |"
        )
    for name, why in s["calibration"]["rejected"].items():
        lines.append(f"\nRegion {name} left out: {why}")
    lines += ["", "![calibration](calibration.png)", "", "## 3. Autofocus", ""]
    lines += [
        "Random starts within +-10 depths of focus (DOF = 1/k, the travel over which blur stays "
        "within 0.5 px of its minimum); error = |final - true focus| in DOF; in focus = within "
        "+-0.5 DOF. `hybrid` is what `autofocus` does by default (the HDME jump with direction "
        "`auto`, then a focus measure read a step either side of the landing and a move to its "
        "peak); `hdme` is the single jump alone (`--no-refine`); Brent and sweep search +-12 "
        "DOF around the start.",
        "",
        "| method | trials | in focus | median error (DOF) | wrong direction | captures "
        "| moves | device time (s) | compute time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, st in s["autofocus"]["by_method"].items():
        if not st:
            continue
        lines.append(
            f"| {m} | {st['trials']} | {st['in_focus_rate']:.0%} "
            f"| {_f(st['median_abs_error_dof'], '.2f')} | {st['wrong_direction_rate']:.0%} "
            f"| {st['median_captures']:.0f} | {st['median_moves']:.0f} "
            f"| {st['median_device_time_s']:.3f} | {st['median_compute_time_s']:.3f} |"
        )
    lines += [
        "",
        "<details><summary>every trial</summary>",
        "",
        "| region | method | direction | start (DOF) | error (DOF) | captures | moves | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["autofocus"]["trials"]:
        lines.append(
            f"| {r['roi']} | {r['method']} | {r['direction'] or '-'} "
            f"| {_f(r['start_dof'], '+.1f')} "
            f"| {_f(r['error_dof'], '+.2f')} | {r['captures']} | {r['moves']} "
            f"| {'refused: ' + r['refused'].split(';')[0] if r['refused'] else ''} |"
        )
    d = s["depth"]
    lines += [
        "",
        "</details>",
        "",
        "## 4. Depth from one frame",
        "",
        f"One capture at {d['position_mm']:.3f} mm, side `{d['side']}`: "
        f"{d['confident_fraction']:.0%} of pixels confident; object distance "
        f"{_f(d['object_distance_mm_p5'], '.0f')} to {_f(d['object_distance_mm_p95'], '.0f')} mm "
        f"(5th to 95th percentile); median error against the simulator's truth "
        f"{_f(d['median_abs_error_mm'], '.1f')} mm ({_f(d['median_rel_error'], '.1%')}). "
        "Files in `depth/` (float32 TIFFs, PNG).",
        "",
        "![depth](depth/depth.png)",
        "",
    ]
    return "\n".join(lines)
