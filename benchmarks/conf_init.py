"""Start hdme-lite-conf from the shipped hdme-lite: same trunk, sigma channel copied, new
log-scale channel at b = 1 px. The result is the --init of the fine-tune recipe.

    python benchmarks/conf_init.py runs/conf-init.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hdme_focus.estimation.model import HDMENet, build_model
from hdme_focus.estimation.weights import read_weights, save_weights, shipped_weights_path


def conf_init(out: Path) -> Path:
    src, meta = read_weights(shipped_weights_path("hdme-lite"))
    assert isinstance(src, HDMENet)
    dst = build_model("hdme-lite-conf")
    state = src.state_dict()
    new = dst.state_dict()
    for k, v in state.items():
        if new[k].shape == v.shape:
            new[k] = v
        else:  # the head's last 1x1 conv: [1, C, 1, 1] -> [2, C, 1, 1]
            new[k] = torch.cat([v, torch.zeros_like(v)], dim=0)
    dst.load_state_dict(new)
    return save_weights(out, dst, preset="hdme-lite-conf", sigma_max_px=float(meta["sigma_max_px"]))


if __name__ == "__main__":
    print(conf_init(Path(sys.argv[1])))
