"""Weights files: safetensors tensors + a self-describing header, and their JSON model cards.

One reader and one writer, shared by training (checkpoints aside) and inference.
The header carries everything needed to rebuild the network and use it
correctly: the architecture and its config, the trained sigma range and the
input normalisation. Safetensors only: loading never unpickles code.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hdme_focus.core.atomic import atomic_path, write_text_atomic
from hdme_focus.core.errors import UsageError

if TYPE_CHECKING:  # torch costs ~1 s to import: only where tensors are touched
    import torch

    from hdme_focus.estimation.model import Network

WEIGHTS_FORMAT = "hdme-focus-weights/1"


class WeightsError(UsageError):
    """A weights file that cannot be used; str() is one user-facing line."""


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a weights file stores: float32 on the CPU, no BatchNorm step counters."""
    import torch

    return {
        k: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


# header key: the factor on the learned error scale found by post-hoc calibration (export)
ERROR_SCALE_KEY = "error_scale_factor"


def save_weights(
    path: Path | str,
    model: Network,
    *,
    preset: str | None,
    sigma_max_px: float,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model tensors + the header (architecture, sigma range, normalisation), atomically."""
    from safetensors.torch import save_file

    from hdme_focus.estimation.model import ARCHITECTURES, architecture_of

    p = Path(path)
    arch = architecture_of(model)
    meta = {
        "format": WEIGHTS_FORMAT,
        "architecture": arch,
        "preset": preset or "custom",
        "config": model.config.model_dump_json(),
        "sigma_max_px": repr(float(sigma_max_px)),
        "normalization": ARCHITECTURES[arch][1],
    }
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    with atomic_path(p) as tmp:  # never leave a half-written weights file
        save_file(model_tensors(model), str(tmp), metadata=meta)
    p.chmod(0o644)  # the temporary file is owner-only; weights are meant to be shared
    return p


def read_weights(path: Path | str) -> tuple[Network, dict[str, str]]:
    """Rebuild the network from a weights file; WeightsError with the reason if it is unusable."""
    from safetensors import safe_open

    from hdme_focus.estimation.model import ARCHITECTURES, build_network

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(str(p))
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{p} is not a readable safetensors file ({first})") from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"{p} is not an hdme-focus weights file (header format {meta.get('format')!r}, "
            f"expected {WEIGHTS_FORMAT!r}); export it with `hdme-focus train`"
        )
    arch = meta.get("architecture", "hdme-net")  # files from before the key are HDME-Net
    if arch not in ARCHITECTURES:
        raise WeightsError(f"{p}: unknown architecture {arch!r}; upgrade hdme-focus")
    if meta.get("normalization") != ARCHITECTURES[arch][1]:
        raise WeightsError(f"{p}: unsupported input normalisation {meta.get('normalization')!r}")
    try:
        model = build_network(arch, meta["config"])
        float(meta["sigma_max_px"])
    except Exception as exc:
        raise WeightsError(f"{p}: invalid architecture header ({type(exc).__name__})") from None
    expected = {k: v.shape for k, v in model_tensors(model).items()}
    problems = [f"missing {k}" for k in sorted(set(expected) - set(tensors))]
    problems += [f"unexpected {k}" for k in sorted(set(tensors) - set(expected))]
    problems += [
        f"{k} has shape {tuple(tensors[k].shape)}, expected {tuple(expected[k])}"
        for k in sorted(expected.keys() & tensors.keys())
        if tensors[k].shape != expected[k]
    ]
    if problems:
        raise WeightsError(
            f"{p}: tensors do not match the {meta.get('preset')} architecture "
            f"({problems[0]}; {len(problems)} problem(s))"
        )
    model.load_state_dict(tensors, strict=False)
    model.eval()
    return model, meta


def shipped_weights_path(name: str) -> Path:
    """Where the package keeps the trained weights called `name` (the file may not exist)."""
    return Path(str(resources.files("hdme_focus.estimation") / "weights" / f"{name}.safetensors"))


def default_weights_path() -> Path:
    """The HDME-Net weights shipped as the default estimator."""
    from hdme_focus.estimation.model import DEFAULT_PRESET

    return shipped_weights_path(DEFAULT_PRESET)


def weights_digest(path: Path | str, length: int = 12) -> str:
    """Leading hex digits of the file's SHA-256: which weights, not just which preset."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def write_model_card(weights_path: Path, card: dict[str, Any]) -> Path:
    """`<stem>.json` beside the weights: the card a person reads (the header holds a copy)."""
    path = write_text_atomic(weights_path.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    path.chmod(0o644)  # shared like the weights, not owner-only like the temporary file
    return path


def model_card(meta: dict[str, str]) -> dict[str, Any]:
    """The model card stored in a weights header ({} if it has none)."""
    card: dict[str, Any] = json.loads(meta.get("model_card", "{}"))
    return card
