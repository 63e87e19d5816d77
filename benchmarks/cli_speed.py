"""Wall time of the command line as a user runs it, and of the kept-loaded `serve` path.

Measured in fresh processes, median of --repeats runs each, on the simulator:

- interpreter start (`python -c pass`), `hdme-focus --help`, import of torch and
  of onnxruntime alone: the fixed costs;
- `hdme-focus autofocus --roi 192,112,28,222 --calibration CAL` with the torch
  runtime and (when the `onnx` extra is installed) HDME_FOCUS_RUNTIME=onnx,
  and `--method brent` for comparison;
- `hdme-focus serve` + `FocusClient`: per-request wall time of autofocus and
  estimate, split into the instrument's device time (simulated here), compute
  time and the rest (the overhead of the kept-loaded path); and one shell call
  through `python -m hdme_focus.client`.

OMP_NUM_THREADS is set to --threads for every child (1 by default: a shared,
loaded machine runs a 2-thread torch slower, not faster). The machine's load
average is recorded before and after: compare rows of one run, not runs.

    python benchmarks/cli_speed.py [--calibration demo-output/calibration.json]
        [--repeats 3] [--threads 1] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hdme_focus.client import FocusClient
from hdme_focus.core.atomic import write_text_atomic

ROI = "192,112,28,222"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores"


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _wall(cmd: list[str], env: dict[str, str], repeats: int) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode not in (0, 5):
            raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return {
        "command": " ".join(cmd),
        "median_s": statistics.median(times),
        "runs_s": [round(t, 3) for t in times],
        "last_line": out.stdout.strip().splitlines()[-1][:200] if out.stdout.strip() else "",
    }


def _hdme_focus() -> list[str]:
    """The console script a user runs (the module when it is not installed)."""
    script = Path(sys.executable).parent / "hdme-focus"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hdme_focus.cli.app"]


def _serve(env: dict[str, str], calibration: Path, repeats: int) -> dict[str, Any]:
    """Start `serve`, time requests through one client, then shut it down."""
    sock = Path(tempfile.mkdtemp(prefix="hdme-bench-")) / "s.sock"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*_hdme_focus(), "serve", "--socket", str(sock)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while not sock.exists():
        if proc.poll() is not None:
            raise SystemExit(f"serve failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.01)
    startup_s = time.perf_counter() - t0
    requests: dict[str, dict[str, Any]] = {
        "autofocus": {"calibration": str(calibration)},
        "autofocus_margin32": {"calibration": str(calibration), "margin_px": 32},
        "estimate": {},
        "status": {},  # no device, no model: the round trip alone
    }
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in requests}
    try:
        with FocusClient(sock) as client:
            for _ in range(max(repeats, 5)):
                for name, fields in requests.items():
                    op = name.split("_")[0]
                    t1 = time.perf_counter()
                    roi = {} if op == "status" else {"roi": ROI}
                    result = client.request(op, **roi, **fields)["result"]
                    wall = time.perf_counter() - t1
                    rows[name].append(
                        {
                            "wall_s": wall,
                            "device_s": float(result.get("device_time_s", 0.0)),
                            "compute_s": float(result.get("compute_time_s", math.nan)),
                            "captures": float(result.get("captures", 1)),
                        }
                    )
            status = client.status()["result"]
        shell = _wall(
            [sys.executable, "-m", "hdme_focus.client", "--socket", str(sock), "status"],
            env,
            repeats,
        )
        with FocusClient(sock) as client:
            client.shutdown()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(sock.parent, ignore_errors=True)
    out: dict[str, Any] = {
        "startup_s": startup_s,
        "estimator_loads": status["estimator_loads"],
        "requests": status["requests"],
        "shell_status_call": shell,
    }
    for name, rs in rows.items():
        entry = {
            "n": len(rs),
            "median_wall_s": statistics.median(r["wall_s"] for r in rs),
            "median_reported_device_s": statistics.median(r["device_s"] for r in rs),
            "median_captures": statistics.median(r["captures"] for r in rs),
        }
        if name.startswith("autofocus"):
            entry["median_compute_s"] = statistics.median(r["compute_s"] for r in rs)
            entry["median_wall_minus_compute_s"] = statistics.median(
                r["wall_s"] - r["compute_s"] for r in rs
            )
        out[name] = entry
    return out


def _import_time(module: str, env: dict[str, str], repeats: int) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        times.append(float(out.stdout.strip()))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calibration", type=Path, default=Path("demo-output/calibration.json"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hdme-cli-speed-"))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["HDME_FOCUS_CACHE"] = str(workdir / "onnx-cache")
    calibration, out_dir = args.calibration.resolve(), args.out.resolve()
    if not calibration.is_file():
        print(f"{calibration} missing: running `hdme-focus demo` for one", file=sys.stderr)
        subprocess.run(
            [*_hdme_focus(), "demo", "--out", str(workdir / "demo")], env=env, check=True
        )
        calibration = workdir / "demo" / "calibration.json"
    os.chdir(workdir)  # the autofocus prior state lands here, not in the repository
    has_onnx = importlib.util.find_spec("onnxruntime") is not None
    load_before = _load()
    r = args.repeats
    af = [*_hdme_focus(), "autofocus", "--roi", ROI, "--calibration", str(calibration)]
    res: dict[str, Any] = {
        "machine": _cpu(),
        "python": platform.python_version(),
        "threads": args.threads,
        "load_average_before": load_before,
        "python_start": _wall([sys.executable, "-c", "pass"], env, r),
        "help": {
            k: v for k, v in _wall([*_hdme_focus(), "--help"], env, r).items() if k != "last_line"
        },
        "import_s": {"torch": _import_time("torch", env, r)},
        "autofocus_torch": _wall(af, env, r),
        "brent_torch": _wall([*af, "--method", "brent"], env, r),
        "serve_torch": _serve(env, calibration, r),
    }
    if has_onnx:
        onnx_env = dict(env, HDME_FOCUS_RUNTIME="onnx")
        res["import_s"]["onnxruntime"] = _import_time("onnxruntime", env, r)
        subprocess.run(af, env=onnx_env, capture_output=True)  # exports to the cache once
        res["autofocus_onnx"] = _wall(af, onnx_env, r)
        res["serve_onnx"] = _serve(onnx_env, calibration, r)
    res["load_average_after"] = _load()
    os.chdir(out_dir)
    shutil.rmtree(workdir, ignore_errors=True)  # the demo, the ONNX export, the prior state
    write_text_atomic(out_dir / "cli-speed.json", json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
