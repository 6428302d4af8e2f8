"""Who runs the toolkit: a person's account, or a Windows service account whose profile lives under ``system32``.

A GoCD agent installed as a service runs as **LocalSystem** unless the operator changes it, or as LocalService /
NetworkService. Those accounts have no profile of a person: ``%USERPROFILE%`` is
``C:\\Windows\\system32\\config\\systemprofile`` (LocalSystem) or ``C:\\Windows\\ServiceProfiles\\<name>``, so every
per-user default (``%LOCALAPPDATA%\\mlops_kit\\venvs``, uv's cache, Jupyter's folder) would land under ``system32``,
where a 32-bit process sees another folder (``SysWOW64``, file system redirection) and Windows upgrades may wipe it.
:mod:`mlops_kit.core.paths` moves those defaults to ``%ProgramData%\\mlops_kit\\…`` for such an account.

Recognised from the environment the service control manager gives a service (the one seam, faked in tests with
the values Windows sets), on Windows only (:mod:`mlops_kit.core.paths` asks):

* ``%USERPROFILE%`` under ``\\system32\\config\\systemprofile`` (or ``\\SysWOW64\\…``): LocalSystem;
  under ``\\ServiceProfiles\\LocalService`` / ``\\NetworkService``: those; any other ``\\ServiceProfiles\\``: a
  service profile;
* ``%USERNAME%`` equal to ``%COMPUTERNAME%$`` (how LocalSystem and NetworkService appear), or ``SYSTEM``,
  ``LOCAL SERVICE``, ``NETWORK SERVICE``. A name merely ending in ``$`` is not enough: a group managed service account
  (``svc-gocd$``) has a profile of its own under ``C:\\Users``, which is fine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Mapping

ServiceKind = Literal["LocalSystem", "LocalService", "NetworkService", "a service profile"]

_PROFILES: tuple[tuple[str, ServiceKind], ...] = (
    ("\\system32\\config\\systemprofile", "LocalSystem"),
    ("\\syswow64\\config\\systemprofile", "LocalSystem"),
    ("\\serviceprofiles\\localservice", "LocalService"),
    ("\\serviceprofiles\\networkservice", "NetworkService"),
    ("\\serviceprofiles\\", "a service profile"),
)
_NAMES: dict[str, ServiceKind] = {"system": "LocalSystem", "local service": "LocalService",
                                  "network service": "NetworkService"}


@dataclass(frozen=True)
class Account:
    """The account as its environment shows it; ``service`` says which service account it is, ``None`` for a
    person's (or a dedicated service user's) account with a normal profile."""

    name: str
    profile: str
    service: ServiceKind | None = None
    why: str = ""

    def describe(self) -> str:
        who = f"{self.name or 'unknown user'} (profile {self.profile or 'unknown'})"
        return f"{self.service} account {who}: {self.why}" if self.service else who


def current(environ: Mapping[str, str] | None = None) -> Account:
    """The account running this process, read from ``environ`` (default ``os.environ``): Windows' variables,
    else POSIX's ``USER``/``HOME``. Whether a service account matters is the caller's (Windows only)."""
    env = os.environ if environ is None else environ
    name = env.get("USERNAME") or env.get("USER") or env.get("LOGNAME") or ""
    profile = env.get("USERPROFILE") or env.get("HOME") or ""
    kind, why = _service_kind(name, profile, env.get("COMPUTERNAME", ""))
    return Account(name, profile, kind, why)


def _service_kind(name: str, profile: str, computer: str) -> tuple[ServiceKind | None, str]:
    folder = profile.replace("/", "\\").lower().rstrip("\\") + "\\"
    for marker, kind in _PROFILES:
        if marker in folder:
            return kind, f"its profile {profile} is a service profile"
    lowered = name.strip().lower()
    if lowered in _NAMES:
        return _NAMES[lowered], f"USERNAME={name}"
    if computer and lowered == f"{computer.strip().lower()}$":
        return "LocalSystem", f"USERNAME={name} is the computer's own account (COMPUTERNAME$)"
    return None, ""
