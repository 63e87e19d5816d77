"""`hdme-focus fuse | magnify | enhance`: parse, call one application, print.

Exit codes: 0 done; 2 bad input (files, sizes, options, an output that exists).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from hdme_focus.cli.common import (
    DeviceOption,
    EstimatorOption,
    UserError,
    console,
    get_config,
    handle_errors,
    load_estimator,
)
from hdme_focus.estimation.devices import Device

RefineOption = typer.Option(
    True,
    "--refine/--no-refine",
    help="Refine the defocus map along the frame's edges (guided filter): isolated wrong "
    "readings would otherwise sharpen or keep blurred spots.",
)
InFocusOption = typer.Option(
    None,
    "--in-focus-px",
    help="Blur sigma (px) up to which a pixel counts as in focus. "
    "Default: the image's sharpest 5 % plus 0.5 px.",
)
TransitionOption = typer.Option(
    1.5, "--transition-px", help="Blur range (px) over which the effect fades in."
)
OverwriteOption = typer.Option(False, "--overwrite", help="Replace existing output files.")


def _estimator(name: str | None, device: Device, refine: bool = False) -> Any:
    """The estimator the user named, optionally refined (the one place the apps load one)."""
    from hdme_focus.estimation.refine import RefinedEstimator

    est = load_estimator(name, device, config=get_config(None))
    return RefinedEstimator(est) if refine else est


@handle_errors
def fuse_cmd(
    inputs: list[Path] = typer.Argument(
        ..., help="A sweep directory, or two or more image files in focus order."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    method: str = typer.Option(
        "classical",
        "--method",
        help="classical (Laplacian pyramid; measured best, docs/benchmarks/fusion.md) or "
        "hdme (the estimator's defocus maps pick the frames).",
    ),
    estimator: str | None = typer.Option(
        None, "--estimator", help="--method hdme: the estimator (as for `estimate`)."
    ),
    device: Device = DeviceOption,
    align: bool = typer.Option(True, "--align/--no-align", help="Register frames (ECC) first."),
    overwrite: bool = OverwriteOption,
) -> None:
    """All-in-focus image and depth-from-focus map of a focus sweep.

    Writes fused.tiff (16 bit, metadata) and fused.png, depth_index.tiff (frame
    index), depth_position_mm.tiff when the sweep recorded positions,
    depth_confidence.tiff and depth.png.
    """
    from hdme_focus.applications.fuse import METHODS, fuse_stack
    from hdme_focus.applications.outputs import check_outputs, fusion_paths, write_fusion
    from hdme_focus.applications.stack import load_stack

    if method not in METHODS:
        raise UserError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    stack = load_stack(inputs)
    check_outputs(list(fusion_paths(out, True).values()), stack.sources, overwrite)
    est = _estimator(estimator, device) if method == "hdme" else None
    result = fuse_stack(stack, method, est, align=align)
    paths = write_fusion(result, out, stack.sources, overwrite=overwrite)
    if result.alignment is not None and result.alignment.failed:
        failed = ", ".join(str(i) for i in result.alignment.failed)
        console.print(f"[yellow]alignment failed for frame(s) {failed}; used as recorded[/]")
    console.print(
        f"fused {len(stack)} frames ({method}{', ' + str(result.estimator) if est else ''})",
        highlight=False,
    )
    for kind, path in paths.items():
        console.print(f"{kind:>12}: {path}", highlight=False)


def _apply_to_image(
    image: Path,
    out: Path,
    options: tuple[str | None, Device, bool, bool],
    effect: Callable[[Any, Any], Any],
    meta: dict[str, Any],
) -> tuple[str, Path]:
    """Read IMAGE, estimate its defocus map, apply `effect(pixels, sigma)`, write OUT."""
    from hdme_focus.applications.outputs import check_outputs, write_image
    from hdme_focus.applications.stack import read_image01

    estimator, device, refine, overwrite = options
    check_outputs([out], [image], overwrite)
    pixels, bit_depth = read_image01(image)
    est = _estimator(estimator, device, refine)
    result = effect(pixels, est.predict(pixels))
    path = write_image(out, result, bit_depth, {"input": str(image), "estimator": est.name, **meta})
    return str(est.name), path


@handle_errors
def magnify_cmd(
    image: Path = typer.Argument(..., help="Image file (PNG, JPEG, TIFF)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output image (.png, .tif)."),
    strength: float = typer.Option(
        1.5, "--strength", help="Extra blur as a multiple of the blur already there."
    ),
    in_focus_px: float | None = InFocusOption,
    transition_px: float = TransitionOption,
    estimator: str | None = EstimatorOption,
    device: Device = DeviceOption,
    refine: bool = RefineOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Defocus magnification: keep what is in focus, blur the rest more (shallower DOF)."""
    from hdme_focus.applications.magnify import magnify_defocus

    name, path = _apply_to_image(
        image,
        out,
        (estimator, device, refine, overwrite),
        lambda pixels, sigma: magnify_defocus(
            pixels, sigma, strength=strength, in_focus_px=in_focus_px, transition_px=transition_px
        ),
        {"strength": strength},
    )
    console.print(f"magnified defocus ({name}): {path}", highlight=False)


@handle_errors
def enhance_cmd(
    image: Path = typer.Argument(..., help="Image file (PNG, JPEG, TIFF)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output image (.png, .tif)."),
    amount: float = typer.Option(1.0, "--amount", help="Sharpening gain where in focus."),
    radius_px: float = typer.Option(1.5, "--radius-px", help="Unsharp-mask radius (px)."),
    in_focus_px: float | None = InFocusOption,
    transition_px: float = TransitionOption,
    estimator: str | None = EstimatorOption,
    device: Device = DeviceOption,
    refine: bool = RefineOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Sharpen what is in focus; leave blurred regions and their noise as they are."""
    from hdme_focus.applications.enhance import enhance_in_focus

    name, path = _apply_to_image(
        image,
        out,
        (estimator, device, refine, overwrite),
        lambda pixels, sigma: enhance_in_focus(
            pixels,
            sigma,
            amount=amount,
            radius_px=radius_px,
            in_focus_px=in_focus_px,
            transition_px=transition_px,
        ),
        {"amount": amount},
    )
    console.print(f"enhanced ({name}): {path}", highlight=False)
