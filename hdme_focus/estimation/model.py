"""HDME-Net: an HRNet with a stride-1 stem that maps one frame to a per-pixel blur sigma.

One configurable class, named presets (as timm does). The stem keeps full input
resolution so the first branch sees the finest detail, where defocus lives;
branches at 1/2, 1/4 and 1/8 add context and are fused repeatedly (HRNet
exchange units). The head upsamples every branch to full resolution, a 1x1
convolution gives one channel and softplus keeps sigma non-negative.

`standardize` is the input normalisation shared by training and inference:
per-frame zero mean and unit variance, computed on the whole frame (before any
tiling), so absolute brightness and contrast carry no weight; blur is read from
spatial structure only.

Two options a preset can switch on (issue 11): `input_norm="lcn"` adds local
contrast normalisation inside the network (each pixel divided by its local
standard deviation, floored by the frame's noise level), so a 2 %-contrast
edge and a full-range edge at the same blur look the same, while a featureless
frame stays at the noise level instead of being stretched to unit variance;
`uncertainty=True` adds a second output channel, the log of a Laplace scale
b (px) of the sigma error, trained by negative log-likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

STD_FLOOR = 1e-4  # a perfectly flat frame is standardised to zeros, not to NaN
BN_MOMENTUM = 0.1
M = TypeVar("M", bound=nn.Module)


class HDMENetConfig(BaseModel):
    """Architecture of one HDME-Net variant; stored in the weights' metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_channels: int = 1
    stem_width: int = 64
    stem_block: Literal["bottleneck", "basic"] = "bottleneck"
    stem_blocks: int = Field(
        default=4, ge=0, description="residual blocks after the stem convolutions"
    )
    stage_widths: tuple[tuple[int, ...], ...] = ((48, 96), (48, 96, 192), (48, 96, 192, 384))
    stage_modules: tuple[int, ...] = (1, 4, 3)
    blocks_per_branch: int = Field(default=4, ge=1)
    head_width: int = Field(default=0, ge=0, description="hidden 1x1 layer of the head; 0 = none")
    multiscale_head: bool = Field(
        default=False,
        description="True: head on all branches upsampled and concatenated (HRNetV2); "
        "False: the last module fuses into the full-resolution branch only (HRNetV1, the paper)",
    )
    upsample: Literal["bilinear", "nearest"] = "bilinear"
    input_norm: Literal["standardize", "lcn"] = "standardize"
    uncertainty: bool = Field(default=False, description="second channel: log Laplace scale (px)")

    @model_validator(mode="after")
    def _check(self) -> HDMENetConfig:
        if len(self.stage_widths) != len(self.stage_modules):
            raise ValueError("stage_widths and stage_modules must have the same length")
        for i, widths in enumerate(self.stage_widths):
            if len(widths) != i + 2:
                raise ValueError(f"stage {i + 2} needs {i + 2} branch widths, got {len(widths)}")
        return self

    @property
    def input_multiple(self) -> int:
        """Inputs are padded to a multiple of this (2 ** number of downsamplings)."""
        return int(2 ** (len(self.stage_widths[-1]) - 1)) if self.stage_widths else 1


PRESETS: dict[str, HDMENetConfig] = {
    # Faithful to HDME-Net (HRNetV2-W48 with a stride-1 stem); ~63.6 M parameters.
    "hdme-w48": HDMENetConfig(),
    # Compact default for a CPU autofocus loop: 8-wide full-resolution branch, one module per
    # stage; ~0.17 M parameters, ~136 ms per 512x512 frame on 2 CPU cores (docs/benchmarks).
    "hdme-lite": HDMENetConfig(
        stem_width=8,
        stem_block="basic",
        stem_blocks=1,
        stage_widths=((8, 16), (8, 16, 32), (8, 16, 32, 64)),
        stage_modules=(1, 1, 1),
        blocks_per_branch=1,
    ),
    # Smallest: 4-wide full-resolution branch, for slow CPUs or large frames.
    "hdme-tiny": HDMENetConfig(
        stem_width=4,
        stem_block="basic",
        stem_blocks=0,
        stage_widths=((4, 16), (4, 16, 32), (4, 16, 32, 64)),
        stage_modules=(1, 1, 1),
        blocks_per_branch=1,
    ),
}
# hdme-lite reading local contrast and predicting its own error scale (issue 11).
PRESETS["hdme-lite-conf"] = PRESETS["hdme-lite"].model_copy(
    update={"input_norm": "lcn", "uncertainty": True}
)
# A GPU-sized option (issue 11 item 5), no weights shipped yet: 16-wide full-resolution
# branch, 2 blocks per branch, 1-2-2 modules, local contrast input and the error head;
# 2.4 M parameters (9.1 MiB fp32: small enough to ship and to bring back from a lent GPU,
# which the 254 MB W48 is not), ~1 s per 512 px frame on 2 CPU cores unfused (measured
# 2026-12-01), so a GPU option, not a CPU default. Recipe: recipes/hdme-w16-conf-gpu.toml.
PRESETS["hdme-w16-conf"] = PRESETS["hdme-lite"].model_copy(
    update={
        "stem_width": 16,
        "stem_blocks": 2,
        "stage_widths": ((16, 32), (16, 32, 64), (16, 32, 64, 128)),
        "stage_modules": (1, 2, 2),
        "blocks_per_branch": 2,
        "input_norm": "lcn",
        "uncertainty": True,
    }
)
DEFAULT_PRESET = "hdme-lite"


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=BN_MOMENTUM)


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = _conv3(cin, planes), _bn(planes)
        self.conv2, self.bn2 = _conv3(planes, cout), _bn(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _bn(cout)) if cin != cout else None
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), _bn(planes)
        self.conv2, self.bn2 = _conv3(planes, planes), _bn(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, cout, 1, bias=False), _bn(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _bn(cout)) if cin != cout else None
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ExchangeModule(nn.Module):
    """One HRNet module: residual blocks per branch, then every branch fused into every other."""

    def __init__(
        self, widths: Sequence[int], blocks: int, upsample: str, outputs: int | None = None
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(w, w) for _ in range(blocks)]) for w in widths
        )
        n = len(widths)
        self.fuse = nn.ModuleList()
        for i in range(n if outputs is None else outputs):
            row = nn.ModuleList()
            for j in range(n):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # lower resolution -> 1x1 to width i, upsampled in forward
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(widths[j], widths[i], 1, bias=False), _bn(widths[i])
                        )
                    )
                else:  # higher resolution -> strided 3x3 convolutions
                    steps: list[nn.Module] = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = widths[i] if last else widths[j]
                        steps += [_conv3(widths[j], cout, stride=2), _bn(cout)]
                        if not last:
                            steps.append(nn.ReLU(inplace=True))
                    row.append(nn.Sequential(*steps))
            self.fuse.append(row)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        out = []
        for i, row in enumerate(self.fuse):
            acc = xs[i]
            layers: nn.ModuleList = row  # type: ignore[assignment]
            for j, layer in enumerate(layers):
                if j == i:
                    continue
                y = layer(xs[j])
                if j > i:
                    y = _resize(y, xs[i].shape[-2:], self.upsample)
                acc = acc + y
            out.append(F.relu(acc))
        return out


def _resize(x: Tensor, size: Sequence[int], mode: str) -> Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class HDMENet(nn.Module):
    """Frame [N, 1, H, W] (standardised, H and W multiples of `input_multiple`) -> sigma_px."""

    def __init__(self, config: HDMENetConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.stem = nn.Sequential(
            _conv3(c.in_channels, c.stem_width),
            _bn(c.stem_width),
            nn.ReLU(inplace=True),
            _conv3(c.stem_width, c.stem_width),
            _bn(c.stem_width),
            nn.ReLU(inplace=True),
        )
        block = Bottleneck if c.stem_block == "bottleneck" else BasicBlock
        layers: list[nn.Module] = []
        cin = c.stem_width
        for _ in range(c.stem_blocks):
            layers.append(block(cin, c.stem_width))
            cin = c.stem_width * block.expansion
        self.layer1 = nn.Sequential(*layers)

        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev: list[int] = [cin]
        for widths, modules in zip(c.stage_widths, c.stage_modules, strict=True):
            self.transitions.append(self._transition(prev, list(widths)))
            last_stage = len(self.stages) == len(c.stage_widths) - 1
            mods = []
            for m in range(modules):
                single = last_stage and m == modules - 1 and not c.multiscale_head
                mods.append(
                    ExchangeModule(widths, c.blocks_per_branch, c.upsample, 1 if single else None)
                )
            self.stages.append(nn.Sequential(*mods))
            prev = list(widths)
        total = sum(prev) if c.multiscale_head else prev[0]
        head: list[nn.Module] = []
        if c.head_width:
            head += [
                nn.Conv2d(total, c.head_width, 1, bias=False),
                _bn(c.head_width),
                nn.ReLU(True),
            ]
            total = c.head_width
        head.append(nn.Conv2d(total, 2 if c.uncertainty else 1, 1))
        self.head = nn.Sequential(*head)

    @staticmethod
    def _transition(prev: list[int], widths: list[int]) -> nn.ModuleList:
        layers = nn.ModuleList()
        for i, w in enumerate(widths):
            if i < len(prev):
                layers.append(
                    nn.Identity()
                    if prev[i] == w
                    else nn.Sequential(_conv3(prev[i], w), _bn(w), nn.ReLU(inplace=True))
                )
            else:  # a new, coarser branch from the coarsest existing one
                layers.append(
                    nn.Sequential(_conv3(prev[-1], w, stride=2), _bn(w), nn.ReLU(inplace=True))
                )
        return layers

    def forward(self, x: Tensor) -> Tensor:
        """sigma_px [N, 1, H, W]; with uncertainty [N, 2, H, W]: sigma_px and log b (px)."""
        if self.config.input_norm == "lcn":
            x = local_contrast_normalize(x)
        xs = [self.layer1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages, strict=True):
            branches: nn.ModuleList = transition  # type: ignore[assignment]
            xs = [t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(branches)]
            xs = stage(xs)
        size = xs[0].shape[-2:]
        feats = torch.cat([xs[0]] + [_resize(y, size, self.config.upsample) for y in xs[1:]], dim=1)
        out = self.head(feats)
        sigma = F.softplus(out[:, :1])
        if not self.config.uncertainty:
            return sigma
        return torch.cat([sigma, out[:, 1:2].clamp(LOG_B_MIN, LOG_B_MAX)], dim=1)


LCN_SIGMA_PX = 8.0  # Gaussian window of the local statistics
LCN_NOISE_FLOOR = 2.0  # local std is floored at this many times the frame's noise std
LOG_B_MIN, LOG_B_MAX = -4.0, 3.0
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def _gauss_blur(x: Tensor, sigma_px: float) -> Tensor:
    r = int(3 * sigma_px)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def noise_std(x: Tensor) -> Tensor:
    """Per-frame white-noise std [N, 1, 1, 1] (Immerkaer 1996): texture barely moves it."""
    k = _IMMERKAER.to(x.device, x.dtype).view(1, 1, 3, 3)
    resp = F.conv2d(x, k).abs().mean(dim=(-2, -1), keepdim=True)
    return resp * (math.sqrt(math.pi / 2.0) / 6.0)


def local_contrast_normalize(x: Tensor) -> Tensor:
    """(x - local mean) / max(local std, 2 x noise std): gain and offset free; noise stays low."""
    mean = _gauss_blur(x, LCN_SIGMA_PX)
    var = (_gauss_blur(x * x, LCN_SIGMA_PX) - mean * mean).clamp_min(0.0)
    floor = (LCN_NOISE_FLOOR * noise_std(x)) ** 2 + 1e-8
    return (x - mean) / torch.sqrt(var + floor)


def get_config(preset_or_config: str | HDMENetConfig) -> HDMENetConfig:
    if isinstance(preset_or_config, HDMENetConfig):
        return preset_or_config
    try:
        return PRESETS[preset_or_config]
    except KeyError:
        raise ValueError(
            f"unknown preset {preset_or_config!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def build_model(preset_or_config: str | HDMENetConfig = DEFAULT_PRESET) -> HDMENet:
    return HDMENet(get_config(preset_or_config))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: HDMENet, height: int = 512, width: int = 512) -> int:
    """Multiply-accumulates of the convolutions for one frame (the bulk of the cost).

    Traced on the 'meta' device: shapes only, no arithmetic, so it is instant
    even for hdme-w48 at full resolution.
    """
    total = 0

    def hook(mod: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Conv2d)
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += out.numel() * (mod.in_channels // mod.groups) * k

    with torch.device("meta"):
        shadow = HDMENet(model.config).eval()
        for m in shadow.modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_hook(hook)
        shadow(torch.zeros(1, model.config.in_channels, height, width))
    return total


def standardize(x: Tensor) -> Tensor:
    """Per-frame zero mean, unit variance over H and W of each [N, C, H, W] frame."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False).clamp_min(STD_FLOOR)
    return (x - mean) / std


def fuse_for_inference(model: M) -> M:
    """Fold every BatchNorm into the convolution before it (eval only; ~1.4x faster on CPU)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1):
                conv, bn = mod[i], mod[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    mod[i] = fuse_conv_bn_eval(conv, bn)
                    mod[i + 1] = nn.Identity()
        elif isinstance(mod, BasicBlock | Bottleneck):
            for k in (1, 2, 3):
                c, b = getattr(mod, f"conv{k}", None), getattr(mod, f"bn{k}", None)
                if isinstance(c, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    setattr(mod, f"conv{k}", fuse_conv_bn_eval(c, b))
                    setattr(mod, f"bn{k}", nn.Identity())
    return model


# --------------------------------------------------------------------------- patch classifier
# MobileNetV2 (Sandler et al. 2018), the network Galetto & Deng (arXiv 2107.14443) chose to
# classify 32 x 32 gray patches into blur levels. Written here rather than imported:
# torchvision does not import beside the CPU build of torch this project installs.


class PatchNetConfig(BaseModel):
    """Architecture of one MobileNetV2 patch classifier; stored in the weights' metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_channels: int = 1
    patch_px: int = Field(default=32, ge=8)
    num_classes: int = Field(default=20, ge=2)
    width_mult: float = Field(default=1.0, gt=0)
    # (expansion t, channels c, repeats n, first stride s) of the paper's Table 2
    blocks: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    stem_channels: int = 32
    stem_stride: int = Field(
        default=1, ge=1, le=2
    )  # 1 for 32 px patches (the paper's 2 is for 224)
    last_channels: int = 1280
    dropout: float = Field(default=0.2, ge=0, lt=1)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Channel counts rounded to a multiple of 8 as in the reference MobileNetV2."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        _bn(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            _bn(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.conv(x)
        return x + y if self.residual else y


class PatchNet(nn.Module):
    """Patches [N, 1, P, P] (each standardised) -> logits [N, num_classes] of blur levels."""

    def __init__(self, config: PatchNetConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        cin = _make_divisible(c.stem_channels * c.width_mult)
        layers: list[nn.Module] = [_conv_bn_relu6(c.in_channels, cin, 3, c.stem_stride)]
        for t, ch, n, s in c.blocks:
            cout = _make_divisible(ch * c.width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _make_divisible(c.last_channels * max(1.0, c.width_mult))
        layers.append(_conv_bn_relu6(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(last, c.num_classes))

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x).mean(dim=(-2, -1))
        out: Tensor = self.classifier(f)
        return out


PATCH_PRESETS: dict[str, PatchNetConfig] = {
    # The paper's network at full width: 2.25 M parameters, 6.0 M MACs per 32 px patch.
    "mobilenetv2-100": PatchNetConfig(),
    # Half width, short head: the shipped CPU preset (a 512 px frame at step 8 is ~4500
    # patches): 0.54 M parameters, 1.7 M MACs per patch.
    "mobilenetv2-050": PatchNetConfig(width_mult=0.5, last_channels=320),
    # Smallest, for quick tests.
    "mobilenetv2-025": PatchNetConfig(width_mult=0.25, last_channels=160),
}
DEFAULT_PATCH_PRESET = "mobilenetv2-050"


def build_patch_net(preset_or_config: str | PatchNetConfig = DEFAULT_PATCH_PRESET) -> PatchNet:
    if isinstance(preset_or_config, PatchNetConfig):
        return PatchNet(preset_or_config)
    try:
        return PatchNet(PATCH_PRESETS[preset_or_config])
    except KeyError:
        raise ValueError(
            f"unknown patch preset {preset_or_config!r}; choose one of {', '.join(PATCH_PRESETS)}"
        ) from None


# --------------------------------------------------------------------------- weight headers
# The architecture key in a weights header -> how to rebuild the network. Files written
# before the key existed are HDME-Net.

Network = HDMENet | PatchNet
ARCHITECTURES: dict[str, tuple[type[HDMENetConfig] | type[PatchNetConfig], str]] = {
    "hdme-net": (HDMENetConfig, "per-frame-standardize"),
    "patch-mobilenetv2": (PatchNetConfig, "per-patch-standardize"),
}


def architecture_of(model: Network) -> str:
    return "patch-mobilenetv2" if isinstance(model, PatchNet) else "hdme-net"


def build_network(architecture: str, config_json: str) -> Network:
    """Rebuild a network from a weights header (ValueError on an unknown or invalid one)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}")
    cls, _ = ARCHITECTURES[architecture]
    config = cls.model_validate_json(config_json)
    return PatchNet(config) if isinstance(config, PatchNetConfig) else HDMENet(config)
