"""A kernel's five ports chosen below the operating system's ephemeral port range.

jupyter_client picks a kernel's ports by binding port 0 and closing the socket; the kernel binds them a moment
later. Between the two, any outgoing connection of the machine may be given the same port as its local end, since
port 0 and outgoing connections draw from the same ephemeral range. On an agent running several jobs at once (each
with HTTP, PostgreSQL and S3 connections through NullPool) that happened: the kernel died with "Address already in
use" and its runner waited forever on a send to a port nobody served (found by ``bench/bench_team_server.py``,
eight pipelines at once). Ports below the ephemeral range are never handed to an outgoing connection, so only
another kernel picking the same random one of ~20,000 in the same second can still collide.

The range is read from the system: Linux's ``/proc/sys/net/ipv4/ip_local_port_range``; Windows' dynamic range is
49152-65535 by default since Vista (``netsh int ipv4 show dynamicport tcp``), as is macOS'. When there is no room
below it (a range starting under 11000), jupyter_client chooses as before.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from ..core.paths import is_windows

FLOOR = 10000  # below: well-known and registered services' habits (and Windows' old 1025-5000 dynamic range)
_DEFAULT_DYNAMIC = (49152, 65535)
_LINUX_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_TRIES = 200


def ephemeral_range() -> tuple[int, int]:
    """The range outgoing connections' local ports come from."""
    if is_windows():
        return _DEFAULT_DYNAMIC
    try:
        low, high = (int(v) for v in _LINUX_RANGE.read_text().split()[:2])
    except (OSError, ValueError):
        return _DEFAULT_DYNAMIC
    return low, high


def _bindable(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((ip, port))
        except OSError:  # in use, or reserved (Windows' excluded port ranges answer WSAEACCES)
            return False
    return True


def free_ports(ip: str, count: int, rng: random.Random | None = None) -> list[int] | None:
    """``count`` distinct ports ``ip`` can bind now, below the ephemeral range; None when there is no room there
    (the caller lets jupyter_client choose)."""
    low = ephemeral_range()[0]
    if low - FLOOR < 1000:
        return None
    rng = rng or random.SystemRandom()
    chosen: list[int] = []
    for _ in range(_TRIES):
        port = rng.randrange(FLOOR, low)
        if port not in chosen and _bindable(ip, port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    return None
