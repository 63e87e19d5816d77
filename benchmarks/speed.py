"""Latency and peak memory per frame of every HDME-Net preset and the patch classifier.

Runs the public estimator path (HDME-Net: standardise, pad, BN-fused network;
patch classifier: pre-smooth, unfold 32 px windows at --step 8 and 16, BN-fused
MobileNetV2 in batches, accumulate) on random weights: speed does not depend on
the weight values. CPU: torch threads set to --threads (2 by default: the
target autofocus machine). CUDA (if present): HDME fp16, timed with
torch.cuda.synchronize. Peak memory: CUDA max_memory_allocated; on CPU the
rise of peak RSS during one predict() in a fresh process (activations +
workspace).

    python benchmarks/speed.py [--repeats 7] [--threads 2] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdme_focus.core.atomic import write_text_atomic
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.estimation.estimator import HDMEEstimator
from hdme_focus.estimation.model import (
    DEFAULT_PATCH_PRESET,
    PRESETS,
    build_model,
    build_patch_net,
    count_macs,
    count_params,
)
from hdme_focus.estimation.patch_classifier import PatchClassifierEstimator

SIZES_PX = (512, 1024)
W48_CPU_SIZE_PX = 256  # the paper-size model is too slow on a 2-core CPU at 512 and above
PATCH_STEPS_PX = (8, 16)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hdme_code(preset: str, size: int) -> str:
    return (
        "from hdme_focus.estimation.estimator import HDMEEstimator\n"
        "from hdme_focus.estimation.model import build_model\n"
        f"est = HDMEEstimator(build_model({preset!r}), sigma_max_px=10.0, device='cpu', "
        f"tile_px={max(512, size)})\n"
    )


def _patch_code(preset: str, step: int) -> str:
    return (
        "from hdme_focus.estimation.patch_classifier import PatchClassifierEstimator\n"
        "from hdme_focus.estimation.model import build_patch_net\n"
        f"est = PatchClassifierEstimator(build_patch_net({preset!r}), sigma_max_px=10.0, "
        f"device='cpu', step_px={step})\n"
    )


def _cpu_peak_mb(build: str, size: int, threads: int) -> float:
    """Peak RSS rise during one predict() in a fresh process (peak reset via clear_refs)."""
    code = (
        "import numpy as np, torch\n"
        f"torch.set_num_threads({threads})\n"
        + build
        + f"frame = np.random.default_rng(0).random(({size}, {size})).astype(np.float32)\n"
        "def status(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key): return int(line.split()[1]) / 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to now\n"
        "before = status('VmRSS')\n"
        "est.predict(frame)\n"
        "print(status('VmHWM') - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _time(est: DefocusEstimator, size: int, repeats: int, cuda: bool) -> tuple[float, float]:
    frame = np.random.default_rng(0).random((size, size)).astype(np.float32)
    est.predict(frame)  # warm-up: allocator, kernel selection
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        est.predict(frame)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    mem = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    return statistics.median(times) * 1000.0, mem


def _measure(
    est: HDMEEstimator | PatchClassifierEstimator, build: str, size: int, n: int, threads: int
) -> tuple[float, float]:
    """(median latency ms, peak memory MB): CUDA's allocator peak, or the CPU RSS probe."""
    cuda = est.device.type == "cuda"
    ms, mem = _time(est, size, n, cuda)
    return ms, (mem if cuda else _cpu_peak_mb(build, size, threads))


def run(repeats: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for preset in PRESETS:
        model = build_model(preset)
        params, gmac = count_params(model), count_macs(model, 512, 512) / 1e9
        for dev in devices:
            sizes = (W48_CPU_SIZE_PX,) if (preset == "hdme-w48" and dev == "cpu") else SIZES_PX
            for size in sizes:
                est = HDMEEstimator(
                    build_model(preset), sigma_max_px=10.0, device=dev, tile_px=max(512, size)
                )
                n = repeats if size <= 512 else max(3, repeats // 2)
                if preset == "hdme-w48" and dev == "cpu":
                    n = 2  # tens of seconds per frame
                ms, mem = _measure(est, _hdme_code(preset, size), size, n, threads)
                rows.append(
                    {
                        "estimator": "hdme-net",
                        "preset": preset,
                        "step_px": None,
                        "device": dev,
                        "precision": "fp16" if est.half else "fp32",
                        "size_px": size,
                        "latency_ms": round(ms, 1),
                        "peak_mem_mb": round(mem, 1),
                        "params": params,
                        "gmac_512": round(gmac, 2),
                    }
                )
                print(rows[-1], flush=True)
                del est
    rows += _patch_rows(devices, repeats, threads)
    return {
        "machine": {
            "cpu": _cpu_name(),
            "cores": torch.get_num_threads(),
            "logical_cpus": __import__("os").cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "threads": threads,
        "repeats": repeats,
        "rows": rows,
    }


def _patch_rows(devices: list[str], repeats: int, threads: int) -> list[dict[str, Any]]:
    """The shipped patch-classifier preset at each frame size and window step."""
    rows: list[dict[str, Any]] = []
    preset = DEFAULT_PATCH_PRESET
    params = count_params(build_patch_net(preset))
    for dev in devices:
        for size in SIZES_PX:
            for step in PATCH_STEPS_PX:
                est = PatchClassifierEstimator(
                    build_patch_net(preset), sigma_max_px=10.0, device=dev, step_px=step
                )
                n = min(3, repeats) if size * 8 <= 512 * step else 2  # 1024 @ step 8: ~17k
                ms, mem = _measure(est, _patch_code(preset, step), size, n, threads)
                rows.append(
                    {
                        "estimator": "patch-classifier",
                        "preset": preset,
                        "step_px": step,
                        "device": dev,
                        "precision": "fp32",
                        "size_px": size,
                        "latency_ms": round(ms, 1),
                        "peak_mem_mb": round(mem, 1),
                        "params": params,
                        "gmac_512": None,
                    }
                )
                print(rows[-1], flush=True)
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Estimator speed: HDME-Net presets and the patch classifier",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, "
        f"{result['threads']} torch threads; GPU: {m['gpu'] or 'none'}. "
        f"Median of {result['repeats']} runs (3 at 1024 px, 2 for hdme-w48 on CPU) after a "
        "warm-up, through "
        "`predict` of each estimator (BN folded into convolutions). CPU memory is the rise of "
        "peak RSS during one predict() in a fresh process; CUDA memory is max_memory_allocated. "
        f"Command: `{result.get('command', 'python benchmarks/speed.py')}`.",
        "",
        "| estimator | preset | step | params | GMAC @512 | device | precision | frame "
        "| latency (ms) | peak mem (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r.get('estimator', 'hdme-net')} | {r['preset']} | {r.get('step_px') or '-'} | "
            f"{r['params'] / 1e6:.2f} M | {r['gmac_512'] or '-'} | {r['device']} | "
            f"{r['precision']} | {r['size_px']}x{r['size_px']} | {r['latency_ms']} | "
            f"{r['peak_mem_mb']} |"
        )
    lines += [
        "",
        f"hdme-w48 on CPU is measured at {W48_CPU_SIZE_PX}x{W48_CPU_SIZE_PX} only: at 512 px and "
        "above it takes many seconds per frame on this CPU.",
        "",
        "The patch classifier classifies one 32 x 32 window per `step` px in each direction "
        "(a 512 px frame is ~4,500 windows at step 8, ~1,200 at step 16), so its time grows "
        "with the square of 1/step; its rows are the median of 3 runs (2 at 1024 px, step 8).",
        "",
    ]
    if result.get("note"):
        lines += [str(result["note"]), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    ap.add_argument("--note", default="", help="a line about the run (e.g. a shared machine)")
    args = ap.parse_args()
    result = run(args.repeats, args.threads)
    argv = [a for a in sys.argv[1:] if a != args.note]
    result["command"] = "python benchmarks/speed.py " + " ".join(argv).replace(
        "--note", '--note "..."'
    )
    result["note"] = args.note
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "speed.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(args.out / "speed.md", to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
