"""A ``winreg``-shaped fake of the Windows registry, built from the documented behaviour, for the code under test to
read through :data:`mlops_kit.core.registry._WINREG` on Linux.

What it reproduces (learn.microsoft.com "Registry Keys Affected by WOW64", "Accessing an Alternate Registry View";
Python's ``winreg`` documentation; PEP 514):

* ``OpenKey(key, sub_key, reserved=0, access=KEY_READ)`` returns a handle (closed with ``CloseKey``) or raises
  ``FileNotFoundError`` ([WinError 2] The system cannot find the file specified); names are case-insensitive.
* ``HKEY_LOCAL_MACHINE\\Software`` has two views on 64-bit Windows: ``KEY_WOW64_64KEY`` reads the native one,
  ``KEY_WOW64_32KEY`` the 32-bit one (``Software\\WOW6432Node``); without either flag a 64-bit process gets the 64-bit
  view. ``HKEY_CURRENT_USER\\Software`` is shared by both views (Windows 7 and later).
* ``EnumKey(key, index)`` raises ``OSError`` ([WinError 259] No more data is available) past the last subkey.
* ``QueryValueEx(key, name)`` returns ``(data, type)``; ``None`` or ``""`` is the key's ``(Default)`` value.

Every ``OpenKey`` is logged as ``(hive name, sub_key, access)`` for tests that check the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any

HKEY_CURRENT_USER = 0x80000001
HKEY_LOCAL_MACHINE = 0x80000002
KEY_READ = 0x20019
KEY_WOW64_64KEY = 0x0100
KEY_WOW64_32KEY = 0x0200
REG_SZ = 1
REG_DWORD = 4
_HIVES = {HKEY_CURRENT_USER: "HKCU", HKEY_LOCAL_MACHINE: "HKLM"}


@dataclass
class _Key:
    values: dict[str, tuple[Any, int]] = field(default_factory=dict)
    children: dict[str, _Key] = field(default_factory=dict)  # lower-case name -> key
    names: dict[str, str] = field(default_factory=dict)  # lower-case name -> name as written


class _Handle:
    def __init__(self, key: _Key) -> None:
        self.key = key
        self.closed = False


class FakeWinreg:
    """One machine's registry: HKLM in its 64- and 32-bit views, HKCU shared."""

    HKEY_CURRENT_USER = HKEY_CURRENT_USER
    HKEY_LOCAL_MACHINE = HKEY_LOCAL_MACHINE
    KEY_READ = KEY_READ
    KEY_WOW64_64KEY = KEY_WOW64_64KEY
    KEY_WOW64_32KEY = KEY_WOW64_32KEY
    REG_SZ = REG_SZ
    REG_DWORD = REG_DWORD

    def __init__(self) -> None:
        self.trees = {("HKLM", "64-bit"): _Key(), ("HKLM", "32-bit"): _Key(), ("HKCU", "shared"): _Key()}
        self.opened: list[tuple[str, str, int]] = []
        self.handles: list[_Handle] = []

    # --- building a machine ------------------------------------------------------------------------------------

    def set_value(self, hive: str, path: str, name: str, data: Any, kind: int = REG_SZ, view: str = "64-bit") -> None:
        key = self._tree(hive, view)
        for part in PureWindowsPath(path).parts:
            lowered = part.lower()
            key.names.setdefault(lowered, part)
            key = key.children.setdefault(lowered, _Key())
        key.values[name.lower()] = (data, kind)

    def register_python(self, company: str, tag: str, install_path: str, *, executable: str | None = None,
                        hive: str = "HKLM", view: str = "64-bit", version: str = "") -> None:
        """A PEP 514 registration as python.org's installer writes it: ``Software\\Python\\<Company>\\<Tag>`` with
        ``DisplayName``/``SysVersion``, its ``InstallPath`` key's ``(Default)`` and ``ExecutablePath``."""
        base = f"Software\\Python\\{company}\\{tag}"
        self.set_value(hive, base, "DisplayName", f"Python {version or tag}", view=view)
        self.set_value(hive, base, "SysVersion", (version or tag).split("-")[0], view=view)
        self.set_value(hive, f"{base}\\InstallPath", "", install_path, view=view)
        if executable is not None:
            self.set_value(hive, f"{base}\\InstallPath", "ExecutablePath", executable, view=view)

    def _tree(self, hive: str, view: str) -> _Key:
        return self.trees[("HKCU", "shared")] if hive == "HKCU" else self.trees[(hive, view)]

    # --- the winreg functions ------------------------------------------------------------------------------------

    def OpenKey(self, key: int, sub_key: str, reserved: int = 0, access: int = KEY_READ) -> _Handle:
        hive = _HIVES[key]
        self.opened.append((hive, sub_key, access))
        view = "32-bit" if access & KEY_WOW64_32KEY else "64-bit"
        node = self._tree(hive, view)
        for part in PureWindowsPath(sub_key).parts:
            child = node.children.get(part.lower())
            if child is None:
                raise FileNotFoundError(2, "The system cannot find the file specified")
            node = child
        handle = _Handle(node)
        self.handles.append(handle)
        return handle

    def EnumKey(self, key: _Handle, index: int) -> str:
        names = list(key.key.names.values())
        if index >= len(names):
            raise OSError(22, "No more data is available")  # WinError 259, ERROR_NO_MORE_ITEMS
        return names[index]

    def QueryValueEx(self, key: _Handle, name: str | None) -> tuple[Any, int]:
        found = key.key.values.get((name or "").lower())
        if found is None:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return found

    def CloseKey(self, key: _Handle) -> None:
        key.closed = True
