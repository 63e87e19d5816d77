"""Compute devices by name: the four a user may choose, checked before torch is touched."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING

from hdme_focus.core.errors import UsageError

if TYPE_CHECKING:
    import torch


class Device(StrEnum):
    """Where an estimator runs; AUTO picks CUDA, then Apple MPS, then the CPU."""

    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"
    AUTO = "auto"


_CUDA_INDEX = re.compile(r"cuda:\d+")  # one GPU of several (torchrun's LOCAL_RANK)


def parse_device(device: str | Device) -> str:
    """The device name, or UsageError with the choices (one line)."""
    name = device.value if isinstance(device, Device) else str(device).strip().lower()
    if name in {d.value for d in Device} or _CUDA_INDEX.fullmatch(name):
        return name
    choices = ", ".join(d.value for d in Device)
    raise UsageError(f"unknown device {device!r}; choose one of {choices} (or cuda:N)")


def resolve_device(device: str | Device | torch.device = Device.AUTO) -> torch.device:
    """The torch device; UsageError if CUDA is asked for and absent."""
    import torch

    if isinstance(device, torch.device):
        return device
    name = parse_device(device)
    if name != Device.AUTO.value:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r} requested but no CUDA GPU is available; use device cpu"
            )
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise UsageError("device 'mps' requested but Apple MPS is not available; use cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
