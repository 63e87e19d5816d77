"""Plot a recorded sweep: per ROI, focus-measure curves and estimated blur vs position.

Like Figure 9 of the HDME-Net paper: each measure is normalised to its maximum
so curves of different scale share one axis and peak at 1 at best focus; when
the record holds `<roi>_sigma_px`, the estimated blur (a V) is drawn on a
second axis, its minimum at the same position as the measures' peak.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hdme_focus.core.atomic import write_figure_atomic
from hdme_focus.focus_measures import MEASURES, best_index, normalise_curve
from hdme_focus.instrument.sweep import SIGMA_QUANTITY
from hdme_focus.records import PLOT, SweepRecord

_LABELS = {
    "lap_var": "variance of Laplacian",
    "tenengrad": "Tenengrad",
    "norm_var": "normalised variance",
}


def plot_sweep(record: SweepRecord, path: Path | None = None) -> Path:
    """Write the sweep plot (PNG) and return its path (default: <sweep>/sweep.png)."""
    path = Path(path) if path is not None else record.directory / PLOT
    rois = record.rois
    x = record.positions_mm
    n = max(1, len(rois))
    # A bare Figure renders with Agg and touches no global pyplot state.
    fig = Figure(figsize=(7.5, 2.4 * n + 1.0), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)
    legend: dict[str, Any] = {}  # label -> handle, one shared legend for all ROIs
    for ax, (name, roi) in zip(axes[:, 0], rois.items(), strict=True):
        quantities = record.quantities(name)
        measures = [q for q in quantities if q in MEASURES]
        for m in measures:
            ax.plot(
                x,
                normalise_curve(record.roi_values(name, m)),
                ".-",
                lw=1.2,
                ms=3,
                label=_LABELS.get(m, m),
            )
        if measures:
            best = best_index(record.roi_values(name, measures[0]))
            if best >= 0:
                ax.axvline(x[best], color="0.5", ls=":", lw=1)
        ax.set_ylabel("measure / max")
        ax.set_ylim(bottom=0)
        ax.set_title(f"ROI {name}  ({roi.spec})", fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
        if SIGMA_QUANTITY in quantities:
            sigma = record.roi_values(name, SIGMA_QUANTITY)
            if np.any(np.isfinite(sigma)):
                ax2 = ax.twinx()
                (line,) = ax2.plot(x, sigma, "k--", lw=1.2, label="estimated sigma")
                ax2.set_ylabel("sigma [px]")
                ax2.set_ylim(bottom=0)
                legend.setdefault("estimated sigma", line)
    axes[-1, 0].set_xlabel("stage position [mm]")
    status = "" if record.status == "complete" else f"  [partial: {record.reason}]"
    fig.suptitle(f"Focus sweep {record.directory.name}: {len(record)} frames{status}", fontsize=10)
    if legend:
        fig.legend(
            list(legend.values()),
            list(legend),
            loc="outside lower center",
            ncols=4,
            fontsize=8,
            frameon=False,
        )
    write_figure_atomic(path, fig, dpi=110)
    return path
