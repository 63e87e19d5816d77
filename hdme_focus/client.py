"""Talk to a running `hdme-focus serve`: autofocus, estimate and status without start-up cost.

    from hdme_focus.client import FocusClient
    with FocusClient("hdme-output/hdme-focus.sock") as focus:
        result = focus.autofocus("192,112,28,222", verify=True)

or from a shell (Python's start-up only, no torch, no numpy):

    python -m hdme_focus.client autofocus --roi 192,112,28,222

Imports nothing beyond the standard library and the error root, so a script
that focuses many regions pays the model's start-up once, in the server.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from hdme_focus.core.errors import EXIT_USAGE, HdmeError

SOCKET_NAME = "hdme-focus.sock"  # in paths.output_dir, where `serve` listens by default
DEFAULT_SOCKET = Path("hdme-output") / SOCKET_NAME  # the default paths.output_dir
SOCKET_ENV = "HDME_FOCUS_SOCKET"


class ServerError(HdmeError):
    """The server answered with an error: `str()` is its one line, `exit_code` its kind."""

    def __init__(self, message: str, exit_code: int, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.reply = reply or {}


class NoServer(HdmeError):
    """Nothing listens on the socket."""

    exit_code = EXIT_USAGE


def default_socket() -> Path:
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


class FocusClient:
    """One connection to the server, kept open across requests; a context manager."""

    def __init__(self, socket_path: Path | str | None = None, timeout_s: float | None = 120.0):
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket()
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(str(self.socket_path))
            except OSError as exc:
                sock.close()
                raise NoServer(
                    f"no hdme-focus server at {self.socket_path} ({exc.strerror or exc}); "
                    "start one with `hdme-focus serve` or pass --socket"
                ) from None
            self._sock = sock
        return self._sock

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; the reply's `result`, or ServerError with the server's line."""
        reply = self.raw({"op": op, **{k: v for k, v in fields.items() if v is not None}})
        if not reply.get("ok"):
            raise ServerError(str(reply.get("error")), int(reply.get("exit_code", 1)), reply)
        return reply

    def raw(self, message: dict[str, Any] | bytes) -> dict[str, Any]:
        """Send a request as given (a dict, or the bytes of one line) and return the reply."""
        sock = self._connect()
        line = message if isinstance(message, bytes) else json.dumps(message).encode()
        sock.sendall(line.rstrip(b"\n") + b"\n")
        while b"\n" not in self._buf:
            chunk = sock.recv(65536)
            if not chunk:
                self.close()
                raise NoServer(f"the server at {self.socket_path} closed the connection")
            self._buf += chunk
        head, _, self._buf = self._buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(head)
        return reply

    def autofocus(self, roi: str, **options: Any) -> dict[str, Any]:
        """Focus `roi`; options as `hdme-focus autofocus` (method, direction, verify, ...)."""
        return self.request("autofocus", roi=roi, **options)

    def estimate(self, roi: str, **options: Any) -> dict[str, Any]:
        """Capture one frame and read the region's blur (and distance, given a calibration)."""
        return self.request("estimate", roi=roi, **options)

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def shutdown(self) -> dict[str, Any]:
        return self.request("shutdown")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buf = b""

    def __enter__(self) -> FocusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------- shell


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hdme_focus.client", description="Requests to a running `hdme-focus serve`."
    )
    p.add_argument(
        "--socket", type=Path, default=None, help=f"default: ${SOCKET_ENV} or {DEFAULT_SOCKET}"
    )
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    sub = p.add_subparsers(dest="op", required=True)
    af = sub.add_parser("autofocus", help="focus one region")
    af.add_argument("--roi", required=True)
    af.add_argument("--method", choices=["hdme", "brent", "sweep"])
    af.add_argument("--direction")
    af.add_argument("--verify", action="store_true", default=None)
    af.add_argument(
        "--no-refine", action="store_false", dest="refine", default=None, help="single jump"
    )
    af.add_argument("--max-tries", type=int, dest="max_tries")
    af.add_argument("--margin-px", type=int, dest="margin_px")
    af.add_argument("--span", type=float, dest="span_mm")
    af.add_argument("--calibration")
    af.add_argument("--estimator")
    es = sub.add_parser("estimate", help="one capture, the region's blur")
    es.add_argument("--roi", required=True)
    es.add_argument("--margin-px", type=int, dest="margin_px")
    es.add_argument("--calibration")
    es.add_argument("--estimator")
    sub.add_parser("status", help="position, loaded models, counters")
    sub.add_parser("shutdown", help="stop the server (it closes the instrument)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    path, as_json, op = args.pop("socket"), args.pop("json"), args.pop("op")
    try:
        with FocusClient(path) as client:
            reply = client.request(op, **args)
    except ServerError as exc:
        if as_json:
            print(json.dumps(exc.reply, indent=2))
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except HdmeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if as_json or "summary" not in reply:
        print(json.dumps(reply.get("result"), indent=2))
    else:
        print(reply["summary"])
    return int(reply.get("exit_code", 0))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
