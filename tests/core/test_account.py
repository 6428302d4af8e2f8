"""mlops_kit.core.account: service accounts recognised from the environment Windows gives a service (the values
below are what the service control manager sets for LocalSystem, LocalService, NetworkService and a user)."""

from __future__ import annotations

import pytest

from mlops_kit.core import account

LOCAL_SYSTEM = {"USERNAME": "AGENT-07$", "COMPUTERNAME": "AGENT-07",
                "USERPROFILE": "C:\\Windows\\system32\\config\\systemprofile"}
LOCAL_SERVICE = {"USERNAME": "LOCAL SERVICE", "COMPUTERNAME": "AGENT-07",
                 "USERPROFILE": "C:\\Windows\\ServiceProfiles\\LocalService"}
NETWORK_SERVICE = {"USERNAME": "AGENT-07$", "COMPUTERNAME": "AGENT-07",
                   "USERPROFILE": "C:\\Windows\\ServiceProfiles\\NetworkService"}


@pytest.mark.parametrize(("environ", "kind"), [
    (LOCAL_SYSTEM, "LocalSystem"),
    ({**LOCAL_SYSTEM, "USERPROFILE": "C:\\WINDOWS\\SysWOW64\\config\\systemprofile"}, "LocalSystem"),  # a 32-bit one
    (LOCAL_SERVICE, "LocalService"),
    (NETWORK_SERVICE, "NetworkService"),
    ({"USERNAME": "svc-gocd", "USERPROFILE": "C:\\Windows\\ServiceProfiles\\svc-gocd"}, "a service profile"),
    ({"USERNAME": "AGENT-07$", "COMPUTERNAME": "agent-07"}, "LocalSystem"),  # no profile variable at all
    ({"USERNAME": "SYSTEM", "USERPROFILE": ""}, "LocalSystem"),
])
def test_service_accounts(environ: dict[str, str], kind: str) -> None:
    found = account.current(environ)
    assert found.service == kind and found.why
    assert kind in found.describe()


@pytest.mark.parametrize("environ", [
    {"USERNAME": "jane", "COMPUTERNAME": "AGENT-07", "USERPROFILE": "C:\\Users\\jane"},
    {"USERNAME": "svc-gocd$", "COMPUTERNAME": "AGENT-07", "USERPROFILE": "C:\\Users\\svc-gocd$"},  # a gMSA
    {"USER": "ana", "HOME": "/home/ana"},
    {},
])
def test_person_and_dedicated_accounts_are_not_service_accounts(environ: dict[str, str]) -> None:
    found = account.current(environ)
    assert found.service is None and found.why == ""
