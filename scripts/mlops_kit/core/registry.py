"""Reading the Windows registry through one seam: keys, subkeys and values, in the 64- or 32-bit view.

Everything goes through :func:`_winreg`, which returns the standard library's ``winreg`` module on Windows and
``None`` elsewhere (then every read answers "not there"). Tests set :data:`_WINREG` to a ``winreg``-shaped fake
holding real key layouts (``tests/fakes/registry.py``), so the Windows branches run on Linux through the same calls:
``OpenKey(hive, path, 0, KEY_READ | view)``, ``EnumKey``, ``QueryValueEx``, ``CloseKey``.

Views: on 64-bit Windows ``HKLM\\Software`` has a 32-bit twin (``Software\\WOW6432Node``) that 32-bit installers
write; ``KEY_WOW64_64KEY`` / ``KEY_WOW64_32KEY`` pick one whatever this process's bitness. ``HKCU\\Software`` is
shared by both views, so it is read once.

Read here: the long-paths switch (:func:`long_paths_enabled`); PEP 514's Python registrations are read by
:mod:`mlops_kit.envs.pep514` with the same functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

from . import paths

Hive = Literal["HKLM", "HKCU"]
View = Literal["64-bit", "32-bit"]
LONG_PATHS_KEY = "SYSTEM\\CurrentControlSet\\Control\\FileSystem"
LONG_PATHS_VALUE = "LongPathsEnabled"

_WINREG: Any = None  # the seam: a winreg-shaped object (tests), else the real module on Windows


def _winreg() -> Any | None:
    if _WINREG is not None:
        return _WINREG
    if not paths.is_windows():
        return None
    try:
        import winreg
    except ImportError:  # the seam says win32 on another system: nothing is registered
        return None
    return winreg


@contextlib.contextmanager
def open_key(hive: Hive, path: str, view: View | None = None) -> Iterator[Any | None]:
    """The key ``hive\\path`` opened for reading in ``view`` (default: this process's), or ``None`` when it does
    not exist, cannot be read, or this is not Windows."""
    api = _winreg()
    if api is None:
        yield None
        return
    access = api.KEY_READ | {"64-bit": api.KEY_WOW64_64KEY, "32-bit": api.KEY_WOW64_32KEY, None: 0}[view]
    root = api.HKEY_LOCAL_MACHINE if hive == "HKLM" else api.HKEY_CURRENT_USER
    try:
        handle = api.OpenKey(root, path, 0, access)
    except OSError:  # FileNotFoundError (not there), PermissionError (not ours to read)
        yield None
        return
    try:
        yield handle
    finally:
        api.CloseKey(handle)


def subkeys(hive: Hive, path: str, view: View | None = None) -> list[str]:
    """The names of the subkeys of ``hive\\path`` (empty when it does not exist)."""
    api = _winreg()
    with open_key(hive, path, view) as key:
        if api is None or key is None:
            return []
        names = []
        for index in range(100_000):
            try:
                names.append(str(api.EnumKey(key, index)))
            except OSError:  # ERROR_NO_MORE_ITEMS
                break
        return names


def value(hive: Hive, path: str, name: str = "", view: View | None = None) -> Any | None:
    """The data of value ``name`` of ``hive\\path`` (``""``: the key's ``(Default)``), or ``None``."""
    api = _winreg()
    with open_key(hive, path, view) as key:
        if api is None or key is None:
            return None
        try:
            data, _kind = api.QueryValueEx(key, name or None)
        except OSError:
            return None
        return data


def long_paths_enabled() -> bool | None:
    """``HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem\\LongPathsEnabled`` is 1: Windows 10 1607+ lets
    programs that declare it (CPython 3.6+, uv) use paths past 260 characters. ``None`` off Windows (no such limit)."""
    if _winreg() is None:
        return None
    return value("HKLM", LONG_PATHS_KEY, LONG_PATHS_VALUE) == 1
