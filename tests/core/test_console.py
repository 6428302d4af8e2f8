"""mlops_kit.core.console: what a person sees, secrets masked (here: a child's output relayed)."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Iterator

import pytest

from mlops_kit.core import console, redact


@pytest.fixture
def registry() -> Iterator[None]:
    redact.forget_secrets()
    yield
    redact.forget_secrets()


def test_relay_masks_a_childs_own_output_line_by_line(registry: None) -> None:
    redact.register_secret("relayed-s3cret")
    child = subprocess.Popen([sys.executable, "-c", "print('a relayed-s3cret b'); print('plain')"],
                             stdout=subprocess.PIPE)
    assert child.stdout is not None
    shown = io.StringIO()
    console.relay(child.stdout, shown, name="test-relay").join(timeout=30)
    child.wait(timeout=30)
    assert shown.getvalue().splitlines() == ["a *** b", "plain"]


def test_relay_keeps_draining_when_its_console_is_gone(registry: None) -> None:
    """A closed console must not leave the child blocked on a full pipe (its notebook would hang)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys\nfor _ in range(20000): print('x' * 99)"],
                             stdout=subprocess.PIPE)
    assert child.stdout is not None
    gone = io.StringIO()
    gone.close()
    thread = console.relay(child.stdout, gone, name="test-relay")
    assert child.wait(timeout=60) == 0
    thread.join(timeout=30)
    assert not thread.is_alive()
