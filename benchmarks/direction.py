"""Direction from one frame: how often the chroma cue speaks, and how often it is right.

Simulator: for each scene and each axial chromatic aberration (optics.axial_chromatic_mm,
f_red - f_blue), record a sweep with a fast classical estimator, calibrate it, and
read the sign convention from that sweep exactly as `autofocus --direction chroma`
does (`instrument.chroma_direction.calibrate_chroma`). Then, for every named
region of the scene, capture one frame at random starts within +-10 depths of
focus of the region's true focus (DOF = 1/k from the thin lens; starts within
half a DOF, where no direction is needed, are drawn again) and ask the cue for
the side. Wrong direction = the cue spoke and chose the side away from focus,
counted over all trials (the target is <= 1 %); when it abstains, autofocus
falls back to prior/probe. The same frames are also read after 4:2:0 JPEG
compression (quality 90, 8 bit), as a colour camera that saves JPEG would.

Real data: the 7 JPEG frames of ../shared/data/pcb-focus-sweep/ (frame index =
position), cut into tiles; each tile's reference focus is the parabolic peak
of its Tenengrad curve; the sign convention is the majority over frames at
least two frames from a tile's peak (as the sweep calibration does), and every
frame at least one frame from the peak is scored. At native resolution and
2x2 binned (binning restores full colour resolution to 4:2:0 JPEG). Skipped
when the folder is absent.

    python benchmarks/direction.py [--trials N] [--quick]

Writes direction.json and direction.md into docs/benchmarks (or --out).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from hdme_focus.config import CameraConfig, InstrumentConfig, OpticsConfig, SceneConfig
from hdme_focus.core.atomic import json_safe, write_json_atomic, write_text_atomic
from hdme_focus.core.frame import to_gray_float
from hdme_focus.core.roi import Roi
from hdme_focus.drivers.sim import SimCamera, open_sim
from hdme_focus.estimation import load_estimator
from hdme_focus.estimation.chroma import chroma_cue
from hdme_focus.focus_measures import focus_measures
from hdme_focus.instrument.calibrate import calibrate_sweep
from hdme_focus.instrument.chroma_direction import ChromaConvention, calibrate_chroma
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.records import load_sweep

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
PCB = ROOT.parent / "shared" / "data" / "pcb-focus-sweep"
SCENES: tuple[str, ...] = ("letters", "tilted", "slide")
AXIAL_MM: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)
CALIBRATION_ESTIMATOR = "focus-measure"  # the convention needs z0 per region, not HDME's speed
SEED = 20_261_201
PCB_TILE_PX = 256


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def _config(scene: str, axial_mm: float) -> InstrumentConfig:
    return InstrumentConfig(
        camera=CameraConfig(width_px=256, height_px=192),
        optics=OpticsConfig(axial_chromatic_mm=axial_mm),
        scene=SceneConfig.model_validate({"name": scene}),
    )


def _jpeg(rgb16: NDArray[Any], bit_depth: int) -> NDArray[np.uint8]:
    rgb8 = np.clip(np.rint(rgb16 / (2**bit_depth - 1) * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", rgb8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise RuntimeError("JPEG round trip failed")
    return np.ascontiguousarray(decoded[..., ::-1])


def _convention(scene: str, axial_mm: float, work: Path) -> ChromaConvention:
    """The sign convention from a recorded, calibrated sweep, as the CLI reads it."""
    est = load_estimator(CALIBRATION_ESTIMATOR, device="cpu")
    sweep_dir = work / f"{scene}-{axial_mm}"
    with open_instrument(_config(scene, axial_mm)) as inst:
        run_sweep(inst, plan_positions(0.2, 2.8, 0.1), default_rois(inst), sweep_dir, estimator=est)
    cal = calibrate_sweep(sweep_dir, est).calibration
    return calibrate_chroma(load_sweep(sweep_dir), cal)


class Tally:
    def __init__(self) -> None:
        self.trials = self.spoke = self.right = self.wrong = 0
        self.wrong_offsets: list[float] = []  # |start - focus| of the wrong ones (DOF or frames)

    def add(self, side: int, truth: int, offset: float = math.nan) -> None:
        self.trials += 1
        if side != 0:
            self.spoke += 1
            self.right += side == truth
            self.wrong += side != truth
            if side != truth:
                self.wrong_offsets.append(abs(offset))

    def summary(self) -> dict[str, Any]:
        n = max(self.trials, 1)
        return {
            "trials": self.trials,
            "spoke": self.spoke,
            "spoke_fraction": self.spoke / n,
            "right_when_spoke": self.right / self.spoke if self.spoke else math.nan,
            "wrong_fraction_of_all": self.wrong / n,
            "wrong_max_offset": max(self.wrong_offsets, default=math.nan),
        }


def simulator_case(scene: str, axial_mm: float, trials: int, work: Path) -> dict[str, Any]:
    conv = _convention(scene, axial_mm, work)
    _, camera, _ = open_sim(_config(scene, axial_mm))
    rng = np.random.default_rng(SEED)
    raw, jpeg = Tally(), Tally()
    cue_ms: list[float] = []
    regions = {str(k): tuple(int(v) for v in box) for k, box in camera.scene.regions.items()}
    per_region = max(1, trials // len(regions))
    for box in regions.values():
        roi = Roi(*box)
        z0 = camera.focus_position_mm(roi.as_tuple())
        dof = 1.0 / camera.lens.slope_px_per_mm(
            float(np.median(roi.slice(camera.true_distance_mm())))
        )
        for _ in range(per_region):
            while True:
                start = z0 + rng.uniform(-10.0, 10.0) * dof
                if abs(start - z0) >= 0.5 * dof and 0.0 <= start <= 3.0:
                    break
            image = _capture(camera, start)
            truth = 1 if z0 > start else -1
            t0 = time.perf_counter()
            cue = chroma_cue(image, roi.as_tuple())
            cue_ms.append(1000.0 * (time.perf_counter() - t0))
            offset_dof = (start - z0) / dof
            raw.add(conv.side(cue), truth, offset_dof)
            jpeg.add(conv.side(chroma_cue(_jpeg(image, 12), roi.as_tuple())), truth, offset_dof)
    return {
        "scene": scene,
        "axial_chromatic_mm": axial_mm,
        "convention": {
            "red_sharper_above": conv.red_sharper_above,
            "votes": conv.votes,
            "agreement": conv.agreement,
            "reason": conv.reason,
        },
        "raw": raw.summary(),
        "jpeg": jpeg.summary(),
        "cue_ms_median": float(np.median(cue_ms)),
    }


def _capture(camera: SimCamera, position_mm: float) -> NDArray[Any]:
    camera.position_source = lambda: position_mm
    return camera.capture().image


# --------------------------------------------------------------------------- real data


def _peak(curve: NDArray[np.float64]) -> float:
    i = int(np.argmax(curve))
    if 0 < i < len(curve) - 1:
        a, b, c = curve[i - 1], curve[i], curve[i + 1]
        den = a - 2 * b + c
        if den < 0:
            return float(i + 0.5 * (a - c) / den)
    return float(i)


def pcb_case(binning: int) -> dict[str, Any] | None:
    files = sorted(PCB.glob("pcb_*.jpg"))
    if len(files) < 3:
        return None
    frames = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError(f"cannot read {f}")
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        if binning > 1:
            h, w = rgb.shape[0] // binning, rgb.shape[1] // binning
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        frames.append(rgb)
    grays = [to_gray_float(f, 8) for f in frames]
    height, width = grays[0].shape
    tile = PCB_TILE_PX // binning
    cues: list[tuple[float, int, bool]] = []  # (signed offset frame - peak, red sharper, speaks)
    tiles = used = 0
    for y in range(0, height - tile + 1, tile):
        for x in range(0, width - tile + 1, tile):
            tiles += 1
            roi = Roi(x, y, tile, tile)
            curve = np.array([focus_measures(g, roi, ("tenengrad",))["tenengrad"] for g in grays])
            if curve.max() < 1.5 * curve.min():
                continue  # no focus peak: flat or textureless
            used += 1
            peak = _peak(np.log(curve))
            for i, image in enumerate(frames):
                cue = chroma_cue(image, roi.as_tuple())
                cues.append((i - peak, int(cue.red_sharper), cue.speaks))
    votes = [1 if red == (off > 0) else -1 for off, red, speaks in cues if speaks and abs(off) >= 2]
    red_above = sum(votes) > 0 if votes else None
    tally = Tally()
    for off, red, speaks in cues:
        if abs(off) < 1.0:
            continue
        truth = -1 if off > 0 else 1  # focus lies below a frame past the peak
        side = 0
        if speaks and red_above is not None:
            side = -1 if bool(red) == red_above else 1
        tally.add(side, truth, off)
    agreement = sum(1 for v in votes if (v > 0) == red_above) / len(votes) if votes else math.nan
    return {
        "binning": binning,
        "frame_px": [width, height],
        "tile_px": tile,
        "tiles": tiles,
        "tiles_with_a_focus_peak": used,
        "convention_votes": len(votes),
        "convention_agreement": agreement,
        "red_sharper_above": red_above,
        "scored": tally.summary(),
    }


# --------------------------------------------------------------------------- report


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Direction from one frame: the chroma cue",
        "",
        f"Measured {results['date']} on {m['processor']} ({m['cpu_count']} CPUs, "
        f"OMP_NUM_THREADS={m['omp_threads']}), {m['platform']}; wall time "
        f"{results['wall_s'] / 60:.1f} min. Produced by `{results['command']}`.",
        "",
        "## Simulator (axial chromatic aberration on)",
        "",
        f"One capture per trial at a random start within +-10 DOF of a region's true "
        f"focus (not within 0.5 DOF), {results['trials']} trials per scene and aberration "
        "spread over the scene's named regions. *Wrong* counts every trial where the cue "
        "spoke and chose the side away from focus, over all trials; where it abstains, "
        "autofocus falls back to prior/probe. Convention: read from a recorded sweep of "
        "the same bench, calibrated with the focus-measure baseline.",
        "",
        "| scene | f_red - f_blue mm | convention (votes, agreement) | speaks | right when "
        "speaks | wrong (of all) | JPEG speaks | JPEG right | JPEG wrong | cue ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["simulator"]:
        c, raw, jp = r["convention"], r["raw"], r["jpeg"]
        conv = (
            f"red sharper {'above' if c['red_sharper_above'] else 'below'} "
            f"({c['votes']}, {_pct(c['agreement'])})"
            if c["red_sharper_above"] is not None
            else f"none ({c['reason']})"
        )
        lines.append(
            f"| {r['scene']} | {r['axial_chromatic_mm']} | {conv} | {_pct(raw['spoke_fraction'])} "
            f"| {_pct(raw['right_when_spoke'])} | {_pct(raw['wrong_fraction_of_all'])} "
            f"| {_pct(jp['spoke_fraction'])} | {_pct(jp['right_when_spoke'])} "
            f"| {_pct(jp['wrong_fraction_of_all'])} | {r['cue_ms_median']:.0f} |"
        )
    offsets = [r["raw"]["wrong_max_offset"] for r in results["simulator"]]
    worst = max((v for v in offsets if v is not None and math.isfinite(v)), default=math.nan)
    total = sum(r["raw"]["trials"] for r in results["simulator"])
    wrong = sum(
        r["raw"]["wrong_fraction_of_all"] * r["raw"]["trials"] for r in results["simulator"]
    )
    lines += [
        "",
        f"All simulator trials: {total}, wrong direction {_pct(wrong / max(total, 1))} "
        "(target <= 1 %); the farthest wrong start was "
        + ("none" if not math.isfinite(worst) else f"{worst:.1f} DOF")
        + " from focus. Per row, `wrong_max_offset` in direction.json gives the farthest "
        "wrong start in DOF.",
        "",
        "## Real JPEG frames: ../shared/data/pcb-focus-sweep",
        "",
    ]
    if not results.get("pcb"):
        lines.append("Skipped: the folder is not present.")
    for p in results.get("pcb") or []:
        s = p["scored"]
        lines.append(
            f"- {p['binning']}x{p['binning']} binned ({p['frame_px'][0]}x{p['frame_px'][1]} px, "
            f"tiles {p['tile_px']} px): {p['tiles_with_a_focus_peak']} of {p['tiles']} tiles "
            f"have a focus peak; convention from {p['convention_votes']} votes, agreement "
            f"{_pct(p['convention_agreement'])}; of {s['trials']} frames at least one frame "
            f"from focus the cue speaks on {_pct(s['spoke_fraction'])}, right on "
            f"{_pct(s['right_when_spoke'])} of those, wrong {_pct(s['wrong_fraction_of_all'])} "
            "of all."
        )
    lines += [
        "",
        "The sign convention on the PCB is fitted on the same frames it is scored on (one "
        "sign, as a sweep calibration would fit it), so its agreement is the honest figure "
        "of how consistent the cue is there.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200, help="per scene and aberration")
    p.add_argument("--quick", action="store_true", help="one scene, one aberration, 30 trials")
    p.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json")
    p.add_argument("--out", type=Path, default=DOCS, help="folder for direction.json / .md")
    args = p.parse_args()
    out: Path = args.out
    if args.report_only:
        data = json.loads((out / "direction.json").read_text(encoding="utf-8"))
        write_text_atomic(out / "direction.md", report(data))
        return
    started = time.perf_counter()
    scenes, aberrations, trials = SCENES, AXIAL_MM, args.trials
    if args.quick:
        scenes, aberrations, trials = ("letters",), (0.25,), 30
    sim = []
    with tempfile.TemporaryDirectory() as tmp:
        for scene in scenes:
            for axial in aberrations:
                print(f"simulator {scene} {axial} mm ...", file=sys.stderr)
                sim.append(simulator_case(scene, axial, trials, Path(tmp)))
    pcb = [r for r in (pcb_case(1), pcb_case(2)) if r is not None] if PCB.is_dir() else []
    results = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/direction.py"
        + (" --quick" if args.quick else "")
        + (f" --trials {args.trials}" if args.trials != 200 and not args.quick else ""),
        "machine": machine(),
        "trials": trials,
        "simulator": sim,
        "pcb": pcb,
        "wall_s": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "direction.json", json_safe(results))
    write_text_atomic(out / "direction.md", report(results))
    print((out / "direction.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
