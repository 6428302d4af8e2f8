"""Pythons registered in the Windows registry (PEP 514), read directly: what a service account finds without the py
launcher, which is installed per user and so is invisible to LocalSystem.

Layout (PEP 514): ``Software\\Python\\<Company>\\<Tag>\\InstallPath``, whose ``(Default)`` value is the install
folder and whose ``ExecutablePath`` value, when present, the interpreter (else ``<InstallPath>\\python.exe``, what
python.org's installer puts there). ``PythonCore`` is CPython from python.org (tags ``3.10``, ``3.10-32``,
``3.12-arm64``); other companies (``ContinuumAnalytics``, ``Astral``, ...) are listed too: every candidate is run
and only CPython of the requested version is kept. The ``PyLauncher`` company is the launcher's own settings key
and is skipped, as PEP 514 says.

Where (PEP 514's search order): ``HKEY_CURRENT_USER`` (this account's installs), then ``HKEY_LOCAL_MACHINE`` in its
64-bit view and in its 32-bit view (``Software\\WOW6432Node``: a 32-bit installer's "for all users" install). A
Python installed "for all users" is what a service account sees. Read through :mod:`mlops_kit.core.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import registry

ROOT = "Software\\Python"
_SEARCH: tuple[tuple[registry.Hive, registry.View | None], ...] = (("HKCU", None), ("HKLM", "64-bit"),
                                                                    ("HKLM", "32-bit"))
_NOT_PYTHONS = {"pylauncher"}


@dataclass(frozen=True)
class Registration:
    """One registered Python: where its key is and the interpreter it names."""

    hive: registry.Hive
    view: registry.View | None
    company: str
    tag: str
    executable: Path

    @property
    def where(self) -> str:
        view = " (32-bit view)" if self.view == "32-bit" else ""
        return f"{self.hive}\\{ROOT}\\{self.company}\\{self.tag}{view}"


@dataclass(frozen=True)
class Scan:
    """Every registration found and, per hive and view, how many (shown when nothing matches)."""

    found: tuple[Registration, ...]
    counts: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        return ", ".join(f"{where} {count}" for where, count in self.counts)


def scan() -> Scan:
    """All PEP 514 registrations of this machine and account, in PEP 514's order (duplicates kept: the caller
    drops them by real path)."""
    found: list[Registration] = []
    counts = []
    for hive, view in _SEARCH:
        here = [r for company in registry.subkeys(hive, ROOT, view) if company.lower() not in _NOT_PYTHONS
                for r in _company(hive, view, company)]
        found.extend(here)
        counts.append((f"{hive}{' 32-bit' if view == '32-bit' else ' 64-bit' if view else ''}", len(here)))
    return Scan(tuple(found), tuple(counts))


def _company(hive: registry.Hive, view: registry.View | None, company: str) -> list[Registration]:
    out = []
    for tag in registry.subkeys(hive, f"{ROOT}\\{company}", view):
        exe = _executable(hive, f"{ROOT}\\{company}\\{tag}\\InstallPath", view)
        if exe is not None:
            out.append(Registration(hive, view, company, tag, exe))
    return out


def _executable(hive: registry.Hive, key: str, view: registry.View | None) -> Path | None:
    """``ExecutablePath``, else ``(Default)\\python.exe``; ``None`` when the key names neither (a broken entry)."""
    named = registry.value(hive, key, "ExecutablePath", view)
    if isinstance(named, str) and named.strip():
        return Path(named.strip().strip('"'))
    folder = registry.value(hive, key, "", view)
    if isinstance(folder, str) and folder.strip():
        return Path(folder.strip().strip('"')) / "python.exe"
    return None
