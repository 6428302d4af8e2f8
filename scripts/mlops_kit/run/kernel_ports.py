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

Two kernels starting at once on one machine (eight pipelines on an agent) could still pick the same port between a
check and a bind (seen: a heartbeat "Address already in use"). So each chosen port is also *reserved*: a file
``<temp>/mlops_kit-kernel-ports/<port>`` created exclusively, which every other runner of the machine skips; it is
removed once the kernel is up (:func:`release`, also at exit) and ignored after :data:`STALE_SECONDS` (a runner
killed before releasing). A folder that cannot be written only turns the reservation off.
"""

from __future__ import annotations

import atexit
import os
import random
import socket
import tempfile
import time
from pathlib import Path

from ..core.paths import is_windows

FLOOR = 10000  # below: well-known and registered services' habits (and Windows' old 1025-5000 dynamic range)
_DEFAULT_DYNAMIC = (49152, 65535)
_LINUX_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_TRIES = 200
STALE_SECONDS = 600.0
_held: list[Path] = []


def reservations() -> Path:
    return Path(tempfile.gettempdir()) / "mlops_kit-kernel-ports"


def _reserve(port: int) -> bool:
    """Claim ``port`` for this process; False when another runner of the machine holds it."""
    folder = reservations()
    path = folder / str(port)
    for _ in range(2):
        try:
            folder.mkdir(exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < STALE_SECONDS:
                    return False
                path.unlink()  # its runner died before releasing it: take it
            except OSError:
                return False
            continue
        except OSError:  # no writable temp folder: choose without reserving, as before
            return True
        if not _held:
            atexit.register(release)
        _held.append(path)
        return True
    return False


def release() -> None:
    """Drop this process's reservations (the kernel has bound its ports: a bound port is never chosen)."""
    while _held:
        try:
            _held.pop().unlink()
        except OSError:
            pass


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
        if port not in chosen and _bindable(ip, port) and _reserve(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    return None
