"""HDME-Net family: presets build, the paper-size model has the paper's size, shapes hold."""

from __future__ import annotations

import pytest
import torch

from hdme_focus.estimation.model import (
    DEFAULT_PRESET,
    PRESETS,
    HDMENetConfig,
    build_model,
    count_macs,
    count_params,
    fuse_for_inference,
    standardize,
)

PAPER_PARAMS = 63.6e6


def test_w48_parameter_count_matches_the_paper() -> None:
    with torch.device("meta"):  # no memory, no init time
        model = build_model("hdme-w48")
    assert abs(count_params(model) - PAPER_PARAMS) / PAPER_PARAMS < 0.01


def test_w48_keeps_the_paper_layout() -> None:
    cfg = PRESETS["hdme-w48"]
    assert cfg.stem_width == 64 and cfg.stem_block == "bottleneck"
    assert cfg.stage_widths == ((48, 96), (48, 96, 192), (48, 96, 192, 384))
    assert cfg.stage_modules == (1, 4, 3)
    assert cfg.input_multiple == 8


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "hdme-w48"])
def test_compact_presets_run_at_full_resolution(preset: str) -> None:
    model = build_model(preset).eval()
    x = torch.randn(2, 1, 40, 56)
    with torch.inference_mode():
        y = model(x)
    channels = 2 if PRESETS[preset].uncertainty else 1  # sigma (+ log error scale)
    assert y.shape == (2, channels, 40, 56)  # stride-1 stem: the output is full resolution
    assert bool((y[:, :1] >= 0).all())  # sigma is non-negative


def test_w48_runs_on_a_small_frame() -> None:
    torch.manual_seed(0)
    model = build_model("hdme-w48").eval()
    with torch.inference_mode():
        y = model(torch.randn(1, 1, 16, 24))
    assert y.shape == (1, 1, 16, 24) and bool((y >= 0).all())


def test_default_is_compact_and_cheaper_than_w48() -> None:
    assert DEFAULT_PRESET in PRESETS and DEFAULT_PRESET != "hdme-w48"
    lite = build_model(DEFAULT_PRESET)
    assert count_params(lite) < 1e6
    assert count_macs(lite, 64, 64) > 0


def test_fused_batchnorm_gives_the_same_output() -> None:
    torch.manual_seed(0)
    model = build_model("hdme-tiny")
    model.train()
    with torch.no_grad():  # make running statistics non-trivial
        for _ in range(3):
            model(torch.randn(4, 1, 32, 32) * 2 + 1)
    model.eval()
    x = torch.randn(1, 1, 48, 40)
    with torch.inference_mode():
        ref = model(x)
        fused = fuse_for_inference(model)(x)
    torch.testing.assert_close(fused, ref, atol=1e-4, rtol=1e-4)


def test_config_rejects_inconsistent_stages() -> None:
    with pytest.raises(ValueError, match="branch widths"):
        HDMENetConfig(stage_widths=((8, 16), (8, 16)), stage_modules=(1, 1))
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("hdme-w99")


def test_standardize_is_invariant_to_gain_and_offset() -> None:
    x = torch.rand(2, 1, 20, 20)
    torch.testing.assert_close(standardize(3 * x + 0.5), standardize(x), atol=1e-4, rtol=1e-4)
    flat = standardize(torch.full((1, 1, 8, 8), 0.3))
    assert bool(torch.isfinite(flat).all())
