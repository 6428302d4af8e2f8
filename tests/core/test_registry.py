"""mlops_kit.core.registry: keys, values and views read through the winreg seam (a fake with real key layouts)."""

from __future__ import annotations

import pytest
from fakes.registry import REG_DWORD, FakeWinreg

from mlops_kit.core import paths, registry


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeWinreg:
    machine = FakeWinreg()
    monkeypatch.setattr(registry, "_WINREG", machine)
    return machine


@pytest.mark.parametrize(("data", "enabled"), [(1, True), (0, False), (None, False)])
def test_long_paths_setting(fake: FakeWinreg, data: int | None, enabled: bool) -> None:
    if data is not None:
        fake.set_value("HKLM", registry.LONG_PATHS_KEY, "LongPathsEnabled", data, REG_DWORD)
    assert registry.long_paths_enabled() is enabled  # a missing value is Windows' default: off
    assert fake.opened[-1][:2] == ("HKLM", "SYSTEM\\CurrentControlSet\\Control\\FileSystem")
    assert all(handle.closed for handle in fake.handles)


def test_off_windows_there_is_no_registry_and_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_WINREG", None)
    assert registry.long_paths_enabled() is None and registry.subkeys("HKLM", "Software\\Python") == []
    monkeypatch.setattr(paths, "_PLATFORM", "win32")  # the seam says Windows, but there is no winreg module here
    assert registry.value("HKLM", registry.LONG_PATHS_KEY, "LongPathsEnabled") is None


def test_views_and_hives(fake: FakeWinreg) -> None:
    fake.set_value("HKLM", "Software\\Vendor\\A", "x", "64", view="64-bit")
    fake.set_value("HKLM", "Software\\Vendor\\B", "x", "32", view="32-bit")
    fake.set_value("HKCU", "Software\\Vendor\\C", "", "mine")
    assert registry.subkeys("HKLM", "Software\\Vendor", "64-bit") == ["A"]
    assert registry.subkeys("HKLM", "software\\vendor", "32-bit") == ["B"]  # names are case-insensitive
    assert registry.subkeys("HKCU", "Software\\Vendor", "32-bit") == registry.subkeys("HKCU", "Software\\Vendor") \
        == ["C"]  # HKCU\Software is shared by both views
    assert registry.value("HKCU", "Software\\Vendor\\C") == "mine"
    assert registry.value("HKLM", "Software\\Vendor\\A", "missing") is None
    assert registry.value("HKLM", "Software\\Nothing", "x") is None
