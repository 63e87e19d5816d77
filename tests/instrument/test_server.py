"""The kept-loaded path: one process holds the instrument and the model across requests.

Checked: requests reuse the loaded model and calibration (counters, not timing);
bad requests get one line and exit code 2 without moving the stage; the socket
is local (a Unix socket, mode 0600), never displaces another file or a live
server, and is removed when the server ends; SIGTERM ends `hdme-focus serve`
as it ends a command, with the stage stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sim_oracle import OracleEstimator, truth_calibration

from hdme_focus.calibration.model import Calibration, load_calibration
from hdme_focus.client import FocusClient, ServerError
from hdme_focus.config import InstrumentConfig, PathsConfig, to_toml
from hdme_focus.estimation.base import DefocusEstimate, DefocusEstimator
from hdme_focus.instrument.devices import Instrument, open_instrument
from hdme_focus.instrument.server import FocusServer, listening
from hdme_focus.instrument.server import ServerError as StartError


@pytest.fixture
def served(
    small_config: InstrumentConfig, tmp_path: Path
) -> Iterator[tuple[FocusServer, list[str | None], str, float]]:
    """A server over the simulator whose loaders record each call; (server, loads, roi, z0)."""
    with open_instrument(small_config) as inst:
        yield _server(inst, tmp_path)


def _server(inst: Instrument, tmp_path: Path) -> tuple[FocusServer, list[str | None], str, float]:
    cal = truth_calibration(inst)
    cal.save(tmp_path / "calibration.json")
    box = cal.roi_named("D").roi
    assert box is not None
    cam: Any = inst.camera
    loads: list[str | None] = []

    def load_estimator(name: str | None) -> DefocusEstimator:
        loads.append(name)
        return OracleEstimator(cam, box, noise_px=0.05)

    def load_cal(source: Path, est: DefocusEstimator) -> Calibration:
        return load_calibration(source)

    server = FocusServer(
        inst, load_estimator, load_cal, default_calibration=tmp_path / "calibration.json"
    )
    roi = ",".join(str(v) for v in box)
    return server, loads, roi, float(cam.focus_position_mm(box))


def test_two_autofocus_requests_reuse_the_model_and_the_calibration(
    served: tuple[FocusServer, list[str | None], str, float],
) -> None:
    server, loads, roi, z0 = served
    first = server.handle({"op": "autofocus", "roi": roi, "verify": True})
    second = server.handle({"op": "autofocus", "roi": roi, "direction": "probe"})
    assert first["ok"] and second["ok"], (first, second)
    assert first["result"]["in_focus"] is True
    assert abs(server.instrument.stage.position_mm() - z0) <= first["result"]["dof_mm"]
    assert loads == [None]  # the model was loaded once, for both requests
    assert (server.estimator_loads, server.calibration_loads) == (1, 1)
    status = server.handle({"op": "status"})["result"]
    assert (status["estimator_loads"], status["requests"]) == (1, 3)
    assert status["estimators"] == [OracleEstimator.name]


def test_an_autofocus_request_refines_by_default_as_the_command_does(
    served: tuple[FocusServer, list[str | None], str, float],
) -> None:
    server, _, roi, _ = served
    refined = server.handle({"op": "autofocus", "roi": roi})
    jump = server.handle({"op": "autofocus", "roi": roi, "refine": False})
    assert refined["ok"] and jump["ok"], (refined, jump)
    assert refined["result"]["refine"] is not None
    assert jump["result"]["refine"] is None
    retries = server.handle({"op": "autofocus", "roi": roi, "max_tries": 2})
    assert not retries["ok"] and retries["exit_code"] == 2, retries
    assert "max_tries 2" in retries["error"] and "refine: false" in retries["error"]


def test_an_autofocus_request_takes_the_global_calibration_as_the_command_does(
    served: tuple[FocusServer, list[str | None], str, float],
) -> None:
    server, _, roi, _ = served
    reply = server.handle({"op": "autofocus", "roi": roi, "global_calibration": True})
    assert reply["ok"], reply
    assert reply["result"]["calibration_region"] == "all-regions"


def test_a_new_calibration_file_is_loaded_again(
    served: tuple[FocusServer, list[str | None], str, float], tmp_path: Path
) -> None:
    server, _, roi, _ = served
    assert server.handle({"op": "estimate", "roi": roi, "calibration": None})["ok"]
    path = tmp_path / "calibration.json"
    assert server.handle({"op": "autofocus", "roi": roi, "calibration": str(path)})["ok"]
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # `calibrate` wrote it anew
    assert server.handle({"op": "autofocus", "roi": roi, "calibration": str(path)})["ok"]
    assert server.calibration_loads == 2


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        ({"op": "focus"}, "op 'focus'"),
        ([1, 2], "op None"),
        ({"op": "autofocus"}, "roi: Field required"),
        ({"op": "autofocus", "roi": "1,2,3"}, "ROI '1,2,3'"),
        ({"op": "autofocus", "roi": "0,0,10,10", "method": "guess"}, "method"),
        ({"op": "autofocus", "roi": "0,0,10,10", "direction": "sideways"}, "sideways"),
        ({"op": "autofocus", "roi": "0,0,10,10", "max_tries": 0}, "max_tries 0"),
        ({"op": "autofocus", "roi": "0,0,10,10", "speed": 3}, "speed: Extra inputs"),
        ({"op": "autofocus", "roi": "150,0,40,10"}, "150"),  # leaves the 160 px frame
        ({"op": "estimate", "roi": "0,0,10,10", "calibration": "/nonexistent.json"}, "nonexist"),
    ],
)
def test_bad_requests_get_one_line_and_exit_2_and_the_stage_stays(
    served: tuple[FocusServer, list[str | None], str, float], request_: Any, words: str
) -> None:
    server, *_ = served
    before = server.instrument.stage.position_mm()
    reply = server.handle(request_)
    assert reply["ok"] is False and reply["exit_code"] == 2, reply
    assert words in reply["error"] and "\n" not in reply["error"]
    assert server.instrument.stage.position_mm() == before
    assert server.instrument.stage.moves == 0
    assert server.handle({"op": "status"})["ok"]  # and it goes on serving


class _Blind:
    """An estimator that cannot read any blur: autofocus must refuse, not move."""

    name = "blind-test-only"
    sigma_max_px = 8.0

    def predict(self, image: Any, bit_depth: int | None = None, **_: Any) -> Any:
        return np.full(np.asarray(image).shape[:2], np.nan, np.float32)

    def estimate(self, image: Any, bit_depth: int | None = None, **_: Any) -> DefocusEstimate:
        sigma = self.predict(image)
        return DefocusEstimate(sigma, np.zeros_like(sigma))


def test_a_refusal_carries_exit_4_and_what_was_done(
    served: tuple[FocusServer, list[str | None], str, float],
) -> None:
    server, _, roi, _ = served
    server._estimators[None] = _Blind()  # type: ignore[assignment]
    reply = server.handle({"op": "autofocus", "roi": roi})
    assert reply["ok"] is False and reply["exit_code"] == 4, reply
    assert "refused" in reply["error"] and reply["result"]["captures"] == 1
    assert server.instrument.stage.moves == 0


def _short_socket(tmp_path: Path) -> Path:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be long
    path = tmp_path / "s.sock"
    return path if len(str(path)) < 100 else Path(f"/tmp/hdme-test-{os.getpid()}.sock")


def test_over_the_socket_requests_answer_and_shutdown_removes_it(
    served: tuple[FocusServer, list[str | None], str, float], tmp_path: Path
) -> None:
    server, loads, roi, _ = served
    path = _short_socket(tmp_path)
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(path, ready.set), daemon=True)
    thread.start()
    assert ready.wait(10)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # only this user drives the stage
    with FocusClient(path, timeout_s=30) as client:
        assert client.autofocus(roi)["result"]["moves"] >= 1
        est = client.estimate(roi, calibration=str(tmp_path / "calibration.json"))["result"]
        assert est["sigma_px"] >= 0 and est["distance_mm"] >= 0 and est["roi"] == roi
        assert "not one JSON object" in client.raw(b"{nope")["error"]
        with pytest.raises(ServerError) as bad:
            client.autofocus("1,2")
        assert bad.value.exit_code == 2
        with FocusClient(path) as other:  # a second client while the first stays connected
            assert other.status()["result"]["requests"] == 5
        client.shutdown()
    thread.join(10)
    assert not thread.is_alive()
    assert not path.exists()
    assert loads == [None]


def test_the_socket_never_displaces_a_file_or_a_live_server(tmp_path: Path) -> None:
    path = _short_socket(tmp_path)
    path.write_text("someone's data")
    with pytest.raises(StartError, match="is not a socket"), listening(path):
        pass
    assert path.read_text() == "someone's data"
    path.unlink()
    with listening(path), pytest.raises(StartError, match="already listening"), listening(path):
        pass
    assert not path.exists()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # left by a server that died: bound, nobody listening
    stale.close()
    with listening(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # the stale socket was replaced by a listening one
        probe.close()
    assert not path.exists()


def test_sigterm_stops_serve_like_a_command(small_config: InstrumentConfig, tmp_path: Path) -> None:
    cfg = small_config.model_copy(update={"paths": PathsConfig(output_dir=tmp_path / "out")})
    config = tmp_path / "instrument.toml"
    config.write_text(to_toml(cfg))
    path = _short_socket(tmp_path)
    cmd = [sys.executable, "-m", "hdme_focus.cli.app", "serve", "-c", str(config)]
    cmd += ["--estimator", "reblur", "--socket", str(path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        t0 = time.monotonic()
        while not path.exists() and proc.poll() is None and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        assert path.exists(), proc.communicate(timeout=10)
        with FocusClient(path) as client:
            assert client.status()["result"]["estimators"] == ["reblur"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.decode()
    assert proc.returncode == 128 + signal.SIGTERM, text
    assert "interrupted (SIGTERM): stage stopped" in text and "Traceback" not in text
    assert not path.exists()
