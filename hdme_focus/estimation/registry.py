"""Estimators by name, as timm finds models: one table from name to constructor.

`create_estimator("hdme-lite")` and every other name in `estimator_names()`;
`load_estimator` also takes a weights file (.safetensors) and is the one loader
every command uses. Constructors import torch lazily, so the classical
estimators work without it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from hdme_focus.core.errors import UsageError
from hdme_focus.estimation.devices import Device, parse_device

if TYPE_CHECKING:  # numpy and OpenCV: not needed to list names or parse options
    from hdme_focus.estimation.base import DefocusEstimator

DEFAULT_ESTIMATOR = "hdme-lite"
REFINE_SUFFIX = "+refine"  # any estimator, guided-filter refined: `reblur+refine`
ALIASES: dict[str, str] = {"hdme": DEFAULT_ESTIMATOR, "hdme-net": DEFAULT_ESTIMATOR}

Factory = Callable[[str], "DefocusEstimator"]  # device name -> estimator
F = TypeVar("F", bound=Factory)
_FACTORIES: dict[str, Factory] = {}


def register(name: str) -> Callable[[F], F]:
    """Decorator: make `factory(device)` the constructor of the estimator called `name`."""

    def add(factory: F) -> F:
        if name in _FACTORIES:
            raise ValueError(f"estimator {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return add


def estimator_names() -> list[str]:
    """Every name `create_estimator` accepts (aliases aside), in registration order."""
    return list(_FACTORIES)


def create_estimator(name: str, device: str | Device = Device.CPU) -> DefocusEstimator:
    """The estimator called `name`; UsageError (one line) for an unknown name or device."""
    dev = parse_device(device)
    key = ALIASES.get(name, name)
    if key not in _FACTORIES:
        raise UsageError(
            f"unknown estimator {name!r}; choose one of {', '.join(_FACTORIES)} "
            "or give a .safetensors weights file"
        )
    return _FACTORIES[key](dev)


def load_estimator(
    name_or_weights: str | Path | None = None, device: str | Device = Device.AUTO
) -> DefocusEstimator:
    """None: the default; a registered name; or a weights file (HDME-Net or patch classifier).

    A name or file ending in `+refine` is that estimator with its map refined by the
    frame (`refine.RefinedEstimator`); its name keeps the suffix, so a calibration
    made with refinement is refused without it and the other way round.
    """
    if name_or_weights is None:
        return create_estimator(DEFAULT_ESTIMATOR, device)
    s = str(name_or_weights)
    if s.endswith(REFINE_SUFFIX):
        from hdme_focus.estimation.refine import RefinedEstimator

        return RefinedEstimator(load_estimator(s.removesuffix(REFINE_SUFFIX) or None, device))
    if s.endswith(".safetensors") or Path(s).is_file():
        return from_weights_file(Path(s), parse_device(device))
    return create_estimator(s, device)


def from_weights_file(path: Path, device: str) -> DefocusEstimator:
    """An estimator from any hdme-focus weights file; its name carries the file's digest.

    Sweeps and calibrations record the name, so a calibration fitted with one set
    of weights is refused with another of the same preset.
    """
    from hdme_focus.estimation.onnx_runtime import load_onnx_estimator, requested_runtime

    if requested_runtime() == "onnx":  # optional: no torch import (HDME-Net weights only)
        if device not in (Device.CPU.value, Device.AUTO.value):
            raise UsageError(f"device {device}: the onnx runtime runs on the cpu; unset it")
        onnx_est = load_onnx_estimator(path)
        if onnx_est is not None:
            return onnx_est
    from hdme_focus.estimation.estimator import HDMEEstimator
    from hdme_focus.estimation.model import HDMENet
    from hdme_focus.estimation.patch_classifier import PatchClassifierEstimator
    from hdme_focus.estimation.weights import read_weights, weights_digest

    model, meta = read_weights(path)
    ident = f"{meta.get('preset', 'custom')}@{weights_digest(path)}"
    smax = float(meta["sigma_max_px"])
    if isinstance(model, HDMENet):
        return HDMEEstimator(
            model, sigma_max_px=smax, name=f"hdme-net:{ident}", device=device, metadata=meta
        )
    return PatchClassifierEstimator(
        model, sigma_max_px=smax, name=f"patch-classifier:{ident}", device=device, metadata=meta
    )


def _shipped(name: str, preset_hint: str) -> Factory:
    def factory(device: str) -> DefocusEstimator:
        from hdme_focus.estimation.weights import WeightsError, shipped_weights_path

        path = shipped_weights_path(name)
        if not path.is_file():
            raise WeightsError(
                f"no trained weights of {name} ship with this package; train them with "
                f"`hdme-focus train {preset_hint}` and pass the exported file"
            )
        return from_weights_file(path, device)

    return factory


for _preset in ("hdme-lite", "hdme-tiny", "hdme-lite-conf", "hdme-w48"):
    register(_preset)(_shipped(_preset, f"--preset {_preset}"))


@register("reblur")
def _reblur(device: str) -> DefocusEstimator:
    from hdme_focus.estimation.baselines import ReblurEstimator

    return ReblurEstimator()


@register("focus-measure")
def _focus_measure(device: str) -> DefocusEstimator:
    from hdme_focus.estimation.baselines import FocusMeasureEstimator

    return FocusMeasureEstimator()


register("patch-classifier")(
    _shipped("patch-classifier", "--recipe hdme_focus/estimation/recipes/patch-classifier-cpu.toml")
)
