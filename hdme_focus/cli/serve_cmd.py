"""`hdme-focus serve`: keep the instrument and the model loaded for repeated calls.

Exit codes: 0 stopped by a `shutdown` request; 2 bad input (the socket path is
taken, config, estimator); 3 the device failed to open; 128 + N a signal (130
Ctrl-C, 143 SIGTERM, 129 SIGHUP) stopped the stage and closed the devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hdme_focus.cli.common import (
    ConfigOption,
    DeviceOption,
    EstimatorOption,
    console,
    describe_error,
    err_console,
    get_config,
    handle_errors,
    load_estimator,
)
from hdme_focus.cli.focus_cmd import checked_calibration, default_calibration_path
from hdme_focus.client import SOCKET_NAME
from hdme_focus.estimation.devices import Device

if TYPE_CHECKING:
    from hdme_focus.calibration.model import Calibration
    from hdme_focus.estimation.base import DefocusEstimator


@handle_errors(moves_stage=True)
def serve_cmd(
    socket_path: Path | None = typer.Option(
        None,
        "--socket",
        help=f"Unix socket to listen on (mode 0600). Default: <paths.output_dir>/{SOCKET_NAME}.",
    ),
    estimator: str | None = EstimatorOption,
    device: Device = DeviceOption,
    config: Path | None = ConfigOption,
) -> None:
    """Open the instrument and load the model once; answer autofocus/estimate/status requests.

    Requests are JSON lines on a local Unix socket (no network port): use
    `hdme_focus.client.FocusClient` from Python or `python -m hdme_focus.client`
    from a shell. Each autofocus works as `hdme-focus autofocus` does, with the
    same calibration checks and prior state file. Ctrl-C, SIGTERM or SIGHUP stop
    the stage and close the devices; a `shutdown` request ends it cleanly.
    """
    from hdme_focus.instrument.devices import open_instrument
    from hdme_focus.instrument.prior import state_path
    from hdme_focus.instrument.server import FocusServer

    cfg = get_config(config)
    path = socket_path if socket_path is not None else Path(cfg.paths.output_dir) / SOCKET_NAME

    def estimator_for(name: str | None) -> DefocusEstimator:
        return load_estimator(name if name is not None else estimator, device, config=cfg)

    def calibration_for(source: Path, est: DefocusEstimator) -> Calibration:
        return checked_calibration(source, cfg).check_matches(source, estimator=est.name)

    with open_instrument(cfg) as inst:
        server = FocusServer(
            inst,
            estimator_for,
            calibration_for,
            default_calibration=default_calibration_path(cfg),
            state_file=state_path(cfg.paths.output_dir),
            describe=describe_error,
        )
        est = server.estimator(None)  # the model loads now, not on the first request
        server.serve(
            path,
            ready=lambda: err_console.print(
                f"serving {est.name} at {path} (stage at {inst.stage.position_mm():.4f} mm); "
                "Ctrl-C stops",
                highlight=False,
                soft_wrap=True,
            ),
        )
    console.print(f"server stopped after {server.requests} request(s)", highlight=False)
