"""A kernel's ports come from below the ephemeral range, so an outgoing connection cannot take one between the
choice and the kernel's bind (eight agents at once made a kernel die with "Address already in use")."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import nbformat
import pytest

from helpers_notebook import run_nb
from mlops_kit.run import kernel_ports


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = kernel_ports.ephemeral_range()[0]
    ports = kernel_ports.free_ports("127.0.0.1", 5, random.Random(7))
    assert ports is not None and len(set(ports)) == 5
    assert all(kernel_ports.FLOOR <= p < low for p in ports)


def test_a_port_in_use_is_never_chosen() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        assert not kernel_ports._bindable("127.0.0.1", busy)


def test_a_port_another_runner_reserved_is_skipped_until_stale(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """Two kernels starting at once never get the same port: a reservation file of another runner is skipped; one
    older than STALE_SECONDS (its runner was killed) is taken; this runner's own go once the kernel is up."""
    monkeypatch.setattr(kernel_ports, "reservations", lambda: tmp_path / "ports")
    monkeypatch.setattr(kernel_ports, "_held", [])
    first = kernel_ports.free_ports("127.0.0.1", 5, random.Random(7))
    assert first is not None and sorted(int(p.name) for p in (tmp_path / "ports").iterdir()) == sorted(first)
    again = kernel_ports.free_ports("127.0.0.1", 5, random.Random(7))  # same draws: all reserved, others chosen
    assert again is not None and not set(again) & set(first)
    kernel_ports.release()
    assert not list((tmp_path / "ports").iterdir())
    (tmp_path / "ports" / str(first[0])).touch()
    assert kernel_ports.free_ports("127.0.0.1", 1, random.Random(7)) != [first[0]]
    kernel_ports.release()
    old = time.time() - kernel_ports.STALE_SECONDS - 5
    os.utime(tmp_path / "ports" / str(first[0]), (old, old))
    assert kernel_ports.free_ports("127.0.0.1", 1, random.Random(7)) == [first[0]]
    kernel_ports.release()


def test_an_unwritable_reservation_folder_still_chooses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("not a folder")
    monkeypatch.setattr(kernel_ports, "reservations", lambda: tmp_path / "a file" / "ports")
    assert len(kernel_ports.free_ports("127.0.0.1", 5) or []) == 5


def test_no_room_below_the_range_lets_jupyter_client_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_ports, "ephemeral_range", lambda: (10500, 60999))
    assert kernel_ports.free_ports("127.0.0.1", 5) is None


def test_the_linux_range_is_read_and_windows_uses_its_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "ip_local_port_range"
    fake.write_text("40000\t50000\n")
    monkeypatch.setattr(kernel_ports, "_LINUX_RANGE", fake)
    monkeypatch.setattr(kernel_ports, "is_windows", lambda: False)
    assert kernel_ports.ephemeral_range() == (40000, 50000)
    fake.write_text("garbage")
    assert kernel_ports.ephemeral_range() == (49152, 65535)
    monkeypatch.setattr(kernel_ports, "is_windows", lambda: True)
    assert kernel_ports.ephemeral_range() == (49152, 65535)


@pytest.mark.slow
def test_a_run_s_kernel_listens_below_the_ephemeral_range(tmp_path: Path, venv_small: Path) -> None:
    code = ("import json, ipykernel.connect as c\n"
            "info = json.loads(c.get_connection_info())\n"
            "print('PORTS', *(info[k] for k in ('shell_port', 'iopub_port', 'stdin_port', 'hb_port', 'control_port')))")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "ports.ipynb")
    done = run_nb("--venv", str(venv_small), "--notebook", str(tmp_path / "ports.ipynb"), "--output",
                  str(tmp_path / "out" / "ports_out.ipynb"), "--log-output", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("PORTS")]
    ports = [int(p) for p in line.split()[1:]]
    assert len(set(ports)) == 5 and all(kernel_ports.FLOOR <= p < kernel_ports.ephemeral_range()[0] for p in ports)
