"""Emulated stage controllers that serve a real pseudo-terminal, for tests and `hdme-focus emulate`.

Each speaks its wire protocol (G-code, Zaber ASCII, Thorlabs APT) on
`emulator.port`, moves an `EmulatedAxis` and injects `Faults` on demand.
"""

from hdme_focus.drivers.serial.emulators.apt import AptEmulator
from hdme_focus.drivers.serial.emulators.base import EmulatedAxis, Faults, PtyEmulator
from hdme_focus.drivers.serial.emulators.gcode import GcodeEmulator
from hdme_focus.drivers.serial.emulators.zaber import ZaberEmulator

__all__ = ["AptEmulator", "EmulatedAxis", "Faults", "GcodeEmulator", "PtyEmulator", "ZaberEmulator"]
