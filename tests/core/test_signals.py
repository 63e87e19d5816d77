"""SIGTERM/SIGHUP become InterruptedBySignal in the main thread, so cleanup runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hdme_focus.core.errors import InterruptedBySignal
from hdme_focus.core.signals import signals_as_exceptions

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_raises_in_main_thread_and_finally_runs(sig: signal.Signals) -> None:
    cleaned: list[str] = []
    with pytest.raises(InterruptedBySignal) as info, signals_as_exceptions():
        try:
            os.kill(os.getpid(), sig)
            for _ in range(1000):
                pass
        finally:
            cleaned.append("stopped")
    assert cleaned == ["stopped"]
    assert info.value.signum == sig
    assert info.value.exit_code == 128 + sig
    assert info.value.signal_name == sig.name


def test_previous_handlers_are_restored() -> None:
    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with signals_as_exceptions():
            assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_second_signal_during_cleanup_does_not_cut_it_short() -> None:
    steps: list[str] = []
    with pytest.raises(InterruptedBySignal), signals_as_exceptions() as received:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        finally:
            os.kill(os.getpid(), signal.SIGHUP)  # arrives while "stopping the stage"
            for _ in range(1000):
                pass
            steps.append("stop sent")
    assert steps == ["stop sent"]
    assert received == [signal.SIGTERM, signal.SIGHUP]


def test_without_the_guard_sigterm_kills_before_cleanup() -> None:
    """The bug this module fixes: a bare process dies on SIGTERM and skips `finally`."""
    code = textwrap.dedent(
        """
        import contextlib, os, signal, sys
        from hdme_focus.core.signals import signals_as_exceptions
        from hdme_focus.core.errors import InterruptedBySignal
        guard = signals_as_exceptions() if sys.argv[1] == "guard" else contextlib.nullcontext()
        try:
            with guard:
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _ in range(10000):
                        pass
                finally:
                    print("cleanup", flush=True)
        except InterruptedBySignal as exc:
            sys.exit(exc.exit_code)
        """
    )
    bare = subprocess.run([sys.executable, "-c", code, "bare"], capture_output=True, text=True)
    guarded = subprocess.run([sys.executable, "-c", code, "guard"], capture_output=True, text=True)
    assert bare.returncode == -signal.SIGTERM and "cleanup" not in bare.stdout
    assert guarded.returncode == 128 + signal.SIGTERM and "cleanup" in guarded.stdout


def test_a_broad_except_exception_in_a_driver_does_not_swallow_the_signal() -> None:
    """Camera SDK wrappers catch Exception; a SIGTERM inside one must still end the command."""
    swallowed = []
    with pytest.raises(InterruptedBySignal), signals_as_exceptions():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # let the handler run here, inside the guard
        except Exception as exc:  # what genicam.py does around a capture
            swallowed.append(exc)
    assert swallowed == []


def test_a_signal_after_the_command_is_one_line_not_a_silent_kill() -> None:
    """SIGTERM while the CLI prints its result or shuts down: exit 143 with one line."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        import hdme_focus.cli.app as cli
        def late(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)  # the command is done, the app is returning
            for _ in range(10000):
                pass
        cli.app = late
        cli.main()
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "interrupted (SIGTERM) outside a command's work" in done.stderr


def test_a_signal_during_shutdown_keeps_the_finished_commands_exit_code() -> None:
    code = textwrap.dedent(
        """
        import atexit, os, signal
        import hdme_focus.cli.app as cli
        atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))  # arrives at shut-down
        cli.app = lambda **kwargs: None
        cli.main()
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
