"""Scoring of the real sets, on made-up readings (runs without ../shared/data)."""

from __future__ import annotations

import math

import pytest

from hdme_focus.estimation import real_sets
from hdme_focus.estimation.base import RoiSigma

NAN = math.nan


def reading(sigma_px: float) -> RoiSigma:
    return RoiSigma(sigma_px, 0.1, 0.0 if math.isnan(sigma_px) else 0.5, 0.0, 0.5)


def test_the_flake_box_as_autofocus_reads_it_ranks_only_the_frames_it_reads() -> None:
    """Refused frames are counted, not ranked: a refusal is 'cannot read', not 'sharp'."""
    field = real_sets.FLAKE_FIELD
    read = [(0.0, 1.0), (10.0, 3.0), (-20.0, 5.0), (30.0, 7.0), (-40.0, NAN), (45.0, NAN)]
    every = [2.0, 2.5, 2.4, 3.0, 1.0, 0.5]  # every pixel: a dissolved flake reads "sharp"
    frames = [
        real_sets.FlakeFrame(field, d, reading(1.0), e, reading(s))
        for (d, s), e in zip(read, every, strict=True)
    ]
    frames.append(real_sets.FlakeFrame("empty", 0.0, reading(NAN), 0.3, reading(NAN)))
    score = real_sets.score_flake(frames)
    assert score.field_read_frames == 4
    assert score.spearman_field_read == pytest.approx(1.0)
    assert score.spearman_field < 0.5  # the every-pixel reading falls where the flake dissolves
    assert [d for d, _ in score.field_read_sigma_px] == [0.0, 10.0, -20.0, 30.0, -40.0, 45.0]
    assert score.empty_refused == 1.0
