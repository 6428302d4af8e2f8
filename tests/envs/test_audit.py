"""mlops_kit.envs.audit: the env.json record (one field list) and the audit bundle."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mlops_kit.core.errors import BadInput
from mlops_kit.envs import audit, build


def test_read_env_missing_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"not a venv built by create_venv.py \(no audit/env.json\)"):
        audit.read_env(tmp_path)
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "env.json").write_text("{not json")
    with pytest.raises(BadInput, match="unreadable venv record"):
        audit.read_env(tmp_path)


def fake_finished_venv(venv: Path) -> audit.EnvRecord:
    """A venv folder with just an audit bundle (no interpreter): enough for read_env / copy_audit."""
    folder = venv / "audit"
    folder.mkdir(parents=True)
    data = {"schema": 1, "stage": "demo", "venv_name": venv.name, "venv_path": str(venv),
            "venv_python": str(venv / "bin" / "python"), "kernel_name": "demo", "kernel_display_name": "Demo",
            "python": {"path": "/usr/bin/python3", "version": "3.12.1", "source": "PATH", "request": "3.12"},
            "platform": "Linux", "installer": {"name": "uv", "version": "0.13.9"}, "spec_hash": "s",
            "cache_key": "k", "created_at": "2026-01-01T00:00:00+00:00",
            "toolkit": {"version": "0.1.0", "git_sha": "unknown"}, "packages": ["six"]}
    (folder / "env.json").write_text(json.dumps(data))
    (folder / "pip_freeze.txt").write_text("six==1.17.0\n")
    (folder / "spec.yaml").write_text("stage: demo\n")
    return audit.read_env(venv)


def test_a_managed_interpreter_round_trips_through_env_json(tmp_path: Path) -> None:
    record = fake_finished_venv(tmp_path / "venv")
    info = audit.ManagedInfo(key="cpython-3.10.13-windows-x86_64-none", build="20240107", sha256="ab" * 32,
                             verified=True, url="https://***@nexus.corp/x.tar.gz", downloaded_at="2026-01-01T00:00:00")
    managed = dataclasses.replace(record, python=dataclasses.replace(record.python, source="uv-managed", managed=info))
    audit.write_bundle(managed, freeze="six==1.17.0\n", spec_text="stage: demo\n")
    again = audit.read_env(tmp_path / "venv")
    assert again.python.managed == info and again.python.source == "uv-managed"
    assert json.loads(again.env_file.read_text())["python"]["managed"]["key"] == "cpython-3.10.13-windows-x86_64-none"


def test_read_env_record_and_copy_audit(tmp_path: Path) -> None:
    record = fake_finished_venv(tmp_path / "venv")
    assert (record.stage, record.python.version, record.installer.name, record.packages) == ("demo", "3.12.1", "uv",
                                                                                           ["six"])
    written = json.loads(record.env_file.read_text())
    assert record.to_json()["python"] == written["python"] | {"implementation": "cpython", "managed": None}  # defaults
    assert {k: v for k, v in record.to_json().items() if k != "python"} == {k: v for k, v in written.items()
                                                                            if k != "python"} | {
        "sys_platform": "", "index": {}, "spec_source": "", "from_freeze": None, "lock": None}
    assert record.freeze_file == tmp_path / "venv" / "audit" / "pip_freeze.txt"
    assert "is missing" in build.health_check(tmp_path / "venv", record)
    dest = audit.copy_bundle(record, tmp_path / "a" / "b")
    assert sorted(p.name for p in dest.iterdir()) == ["env.json", "pip_freeze.txt", "spec.yaml"]
    assert audit.copy_bundle(record, record.audit_dir) == record.audit_dir  # onto itself: nothing to do
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="exists and is not a folder"):
        audit.copy_bundle(record, tmp_path / "file")
    moved = tmp_path / "moved"
    (tmp_path / "venv").rename(moved)
    assert "moved (venvs are not relocatable)" in build.health_check(moved, audit.read_env(moved))


def test_a_locked_venvs_bundle_carries_the_lock_before_env_json(tmp_path: Path) -> None:
    """The lock's copy is part of what --audit-dir copies and run_notebook logs (environment/), env.json last."""
    record = fake_finished_venv(tmp_path / "venv")
    data = json.loads(record.env_file.read_text())
    data["lock"] = {"path": "/repo/specs/demo.lock.txt", "sha256": "f" * 64, "python": "3.12", "spec_hash": "s",
                    "resolved_at": "2026-01-01T00:00:00+00:00", "pins": 30, "removed": ["setuptools"]}
    record.env_file.write_text(json.dumps(data))
    (record.audit_dir / audit.LOCK_TXT).write_text("# lock\n")
    locked = audit.read_env(tmp_path / "venv")
    assert locked.lock == audit.LockInfo("/repo/specs/demo.lock.txt", "f" * 64, "3.12", "s",
                                         "2026-01-01T00:00:00+00:00", 30, True, ["setuptools"])
    assert [p.name for p in locked.bundle] == ["pip_freeze.txt", "spec.yaml", "spec.lock.txt", "env.json"]
    assert [p.name for p in record.bundle] == ["pip_freeze.txt", "spec.yaml", "env.json"]  # no lock: no copy
    assert locked.to_json()["lock"]["verified"] is True
    dest = audit.copy_bundle(locked, tmp_path / "artifacts")
    assert sorted(p.name for p in dest.iterdir()) == ["env.json", "pip_freeze.txt", "spec.lock.txt", "spec.yaml"]
