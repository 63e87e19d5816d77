"""One error root with one exit code per kind, so the CLI maps errors to words once.

Every error a user can cause or a device can report derives from `HdmeError`;
`str()` is the user-facing line (the value and the fix). Lower layers name no CLI
flags; the CLI adds the words for its own options.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # bad config, bad arguments, bad input files, bad calibration
EXIT_DEVICE = 3  # the hardware refused or failed
EXIT_REFUSED = 4  # the procedure refused to act (low confidence, not bracketed, ...)
EXIT_NOT_IN_FOCUS = 5  # autofocus --verify measured the result and it is not in focus
EXIT_INTERRUPTED = 130  # Ctrl-C; a signal N ends with 128 + N


class HdmeError(Exception):
    """Root of every error this package raises on purpose; `exit_code` says which kind."""

    exit_code: int = EXIT_USAGE


class UsageError(HdmeError, ValueError):
    """Input the user can fix: config, arguments, files, ROI, calibration."""

    exit_code = EXIT_USAGE


class DeviceError(HdmeError, RuntimeError):
    """Everything a stage or camera can report."""

    exit_code = EXIT_DEVICE


class RefusedError(HdmeError, RuntimeError):
    """A procedure declined to act because acting would be unsafe or wrong."""

    exit_code = EXIT_REFUSED


class InterruptedBySignal(BaseException):
    """SIGTERM or SIGHUP arrived; raised in the main thread so cleanup runs as for Ctrl-C.

    A BaseException, like KeyboardInterrupt, so no `except Exception` (a camera
    SDK wrapper, a decoder guard) can turn a shutdown request into a device error.
    """

    exit_code: int

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(f"interrupted by {name}")
        self.signum = signum
        self.signal_name = name
        self.exit_code = 128 + signum
