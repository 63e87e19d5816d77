"""Thorlabs APT wire format: message ids, the 6-byte header, status words.

Shared by the driver (`apt.py`) and its emulator so both read the same table.
A header is `id:u16, param1:u8, param2:u8, dest:u8, source:u8`, or, when a
data packet follows, `id:u16, length:u16, dest|0x80, source`. Little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HOST = 0x01
USB_UNIT = 0x50  # generic USB hardware unit (K-Cube, T-Cube)
HAS_DATA = 0x80

HW_DISCONNECT = 0x0002
HW_REQ_INFO = 0x0005
HW_GET_INFO = 0x0006
HW_START_UPDATEMSGS = 0x0011
HW_STOP_UPDATEMSGS = 0x0012
HW_NO_FLASH_PROGRAMMING = 0x0018
HW_RESPONSE = 0x0080
HW_RICHRESPONSE = 0x0081
MOD_SET_CHANENABLESTATE = 0x0210
MOT_REQ_POSCOUNTER = 0x0411
MOT_GET_POSCOUNTER = 0x0412
MOT_MOVE_HOME = 0x0443
MOT_MOVE_HOMED = 0x0444
MOT_MOVE_ABSOLUTE = 0x0453
MOT_MOVE_COMPLETED = 0x0464
MOT_MOVE_STOP = 0x0465
MOT_MOVE_STOPPED = 0x0466
MOT_REQ_DCSTATUSUPDATE = 0x0490
MOT_GET_DCSTATUSUPDATE = 0x0491

NAMES = {v: k for k, v in globals().items() if k.startswith(("HW_", "MOD_", "MOT_"))}

# data length of every message the host expects to receive (None: header only)
INCOMING: dict[int, int | None] = {
    HW_DISCONNECT: None,
    HW_GET_INFO: 84,
    HW_RESPONSE: None,
    HW_RICHRESPONSE: 68,
    MOT_GET_POSCOUNTER: 6,
    MOT_MOVE_HOMED: None,
    MOT_MOVE_COMPLETED: 14,
    MOT_MOVE_STOPPED: 14,
    MOT_GET_DCSTATUSUPDATE: 14,
}

STOP_IMMEDIATE = 0x01
STOP_PROFILED = 0x02

# status bits (DC servo status update)
CW_HW_LIMIT = 0x00000001
CCW_HW_LIMIT = 0x00000002
MOVING_CW = 0x00000010
MOVING_CCW = 0x00000020
JOGGING_CW = 0x00000040
JOGGING_CCW = 0x00000080
MOTOR_CONNECTED = 0x00000100
HOMING = 0x00000200
HOMED = 0x00000400
MOTION_ERROR = 0x00004000
CURRENT_LIMIT = 0x01000000
CHANNEL_ENABLED = 0x80000000
IN_MOTION = MOVING_CW | MOVING_CCW | JOGGING_CW | JOGGING_CCW | HOMING

BIT_NAMES = {
    CW_HW_LIMIT: "forward hardware limit switch",
    CCW_HW_LIMIT: "reverse hardware limit switch",
    MOTION_ERROR: "motion error (excessive position error)",
    CURRENT_LIMIT: "motor current limit reached",
}

_STATUS = struct.Struct("<HiHHI")  # channel, position, velocity, current, status bits


def header(
    msg_id: int, param1: int = 0, param2: int = 0, dest: int = USB_UNIT, source: int = HOST
) -> bytes:
    return struct.pack("<HBBBB", msg_id, param1, param2, dest, source)


def with_data(msg_id: int, data: bytes, dest: int = USB_UNIT, source: int = HOST) -> bytes:
    return struct.pack("<HHBB", msg_id, len(data), dest | HAS_DATA, source) + data


@dataclass(frozen=True)
class Status:
    """A status update (also carried by MOVE_COMPLETED / MOVE_STOPPED)."""

    channel: int
    position_counts: int
    bits: int

    @property
    def moving(self) -> bool:
        return bool(self.bits & IN_MOTION)

    @property
    def homed(self) -> bool:
        return bool(self.bits & HOMED)

    def problems(self) -> list[str]:
        return [name for bit, name in BIT_NAMES.items() if self.bits & bit]

    def pack(self) -> bytes:
        return _STATUS.pack(self.channel, self.position_counts, 0, 0, self.bits)

    @classmethod
    def unpack(cls, data: bytes) -> Status:
        channel, pos, _vel, _cur, bits = _STATUS.unpack(data[:14])
        return cls(channel, pos, bits)
