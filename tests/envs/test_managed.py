"""Managed Pythons: the policy, the folder, uv's real download code against a local fake host (slow tests), and the
Windows layout through a fake uv (tests/fakes/uv.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fakes.uv import ARCHIVE_SHA256, calls, make_uv
from fakes.windows import Entry, link_python, make_py_launcher

from helpers import POSIX_FAKES, SCRIPTS, TOOLKIT_PYTHON, free_port, make_spec
from helpers_managed import Mirror, managed_builds, sha256_of, tools_only_path, write_downloads_json
from mlops_kit.core import paths, proc
from mlops_kit.core.errors import EXIT_PYTHON_NOT_FOUND, BadInput, PythonNotFound
from mlops_kit.envs import audit, interpreters, managed
from mlops_kit.envs.spec import parse_python_request

pytestmark = pytest.mark.usefixtures("fresh_interpreter_cache")


def req(text: str):
    return parse_python_request(text)


def lines() -> tuple[list[str], object]:
    said: list[str] = []
    return said, said.append


# ---------------------------------------------------------------------------------------------------- policy


@pytest.mark.parametrize(("flag", "env", "allowed", "why"), [
    (None, {}, True, "the default (auto)"),
    ("never", {"MLOPS_PYTHON_DOWNLOADS": "auto"}, False, "--python-downloads never"),
    ("auto", {"UV_PYTHON_DOWNLOADS": "never"}, True, "--python-downloads auto"),
    (None, {"MLOPS_PYTHON_DOWNLOADS": "Never", "UV_PYTHON_DOWNLOADS": "automatic"}, False, "MLOPS_PYTHON_DOWNLOADS=Never"),
    (None, {"MLOPS_PYTHON_DOWNLOADS": "auto", "UV_PYTHON_DOWNLOADS": "never"}, True, "MLOPS_PYTHON_DOWNLOADS=auto"),
    (None, {"UV_PYTHON_DOWNLOADS": "manual"}, False, "UV_PYTHON_DOWNLOADS=manual"),
    (None, {"UV_PYTHON_DOWNLOADS": "never"}, False, "UV_PYTHON_DOWNLOADS=never"),
    (None, {"UV_PYTHON_DOWNLOADS": "automatic"}, True, "UV_PYTHON_DOWNLOADS=automatic"),
    (None, {"MLOPS_PYTHON_DOWNLOADS": "  "}, True, "the default (auto)"),
])
def test_the_policy_flag_then_ours_then_uvs(flag: str | None, env: dict[str, str], allowed: bool, why: str) -> None:
    assert managed.download_policy(flag, env) == managed.DownloadPolicy(allowed, why)


@pytest.mark.parametrize(("flag", "env", "named"), [
    ("sometimes", {}, "--python-downloads 'sometimes'"),
    (None, {"MLOPS_PYTHON_DOWNLOADS": "manual"}, "MLOPS_PYTHON_DOWNLOADS='manual'"),
    (None, {"UV_PYTHON_DOWNLOADS": "yes please"}, "UV_PYTHON_DOWNLOADS='yes please'"),
])
def test_a_bad_policy_value_is_bad_input_naming_the_setting(flag: str | None, env: dict[str, str], named: str) -> None:
    with pytest.raises(BadInput, match="^" + named.replace("(", r"\(")):
        managed.download_policy(flag, env)


def test_the_folder_is_beside_the_venv_root_unless_uv_is_told_otherwise(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert managed.pythons_dir(tmp_path / "ml venvs") == tmp_path / "pythons"
    assert managed.pythons_dir(paths.default_venv_root()) == paths.default_venv_root().parent / "pythons"
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "shared pythons"))
    assert managed.pythons_dir(tmp_path / "ml venvs") == tmp_path / "shared pythons"


def test_uv_errors_become_one_line() -> None:
    mismatch = ("error: Failed to install cpython-3.10.13-linux-x86_64-gnu\n  cause: Hash mismatch for "
                "`cpython-3.10.13-linux-x86_64-gnu`\n\n         Expected:\n         0000\n\n         Computed:\n"
                "         12b9\n")
    assert managed.uv_error(proc.Result(("uv",), 1, "", mismatch)) == (
        "Failed to install cpython-3.10.13-linux-x86_64-gnu: Hash mismatch for `cpython-3.10.13-linux-x86_64-gnu` "
        "expected 0000, computed 12b9")
    network = ("error: Failed to install cpython-3.10.13-linux-x86_64-gnu\n  cause: Failed to download "
               "`https://bob:tok3n@nexus.corp/x.tar.gz`\n  cause: error sending request\n  cause: tcp connect error\n")
    line = managed.uv_error(proc.Result(("uv",), 1, "", network))
    assert "\n" not in line and "tok3n" not in line and line.endswith("tcp connect error")
    assert managed.uv_error(proc.Result(("uv",), 2, "", "")) == "exit code 2"


# ------------------------------------------------------------------------------------------- Windows (fake uv)


@pytest.fixture()
def windows_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pythons: dict[str, Path]) -> Path:
    """Windows mode, no installed Python visible, a fake uv offering the 3.10 and 3.12 of pyenv as Windows builds."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setenv("PATH", str(bindir))
    for name in ("PYENV_ROOT", "PYENV", "PYENV_HOME"):
        monkeypatch.delenv(name, raising=False)
    catalog = {p.parent.parent.name: os.fspath(p) for m, p in pythons.items() if m in ("3.10", "3.12")}
    uv = make_uv(tmp_path / "uv-bin" / "uv", catalog, tmp_path / "uv-calls.jsonl")
    monkeypatch.setattr(managed, "uv_bin", lambda: str(uv))
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "automatic")  # not passed on: the policy is ours
    monkeypatch.setenv("UV_PYTHON_BIN_DIR", str(tmp_path / "user bin"))  # not passed on: nothing goes to PATH
    return tmp_path


@POSIX_FAKES
def test_windows_a_missing_python_is_downloaded_into_the_folder_and_recorded(windows_uv: Path,
                                                                            pythons: dict[str, Path]) -> None:
    folder = windows_uv / "pythons"
    said, echo = lines()
    interp = managed.find_or_download(req("3.10"), folder=folder, policy=managed.download_policy(), echo=echo)
    version = pythons["3.10"].parent.parent.name
    key = f"cpython-{version}-windows-x86_64-none"
    assert interp.path == folder / key / "python.exe" and interp.source == "uv-managed" and interp.downloaded
    assert interp.managed == audit.ManagedInfo(key=key, build="20260101", sha256=ARCHIVE_SHA256, verified=True,
                                               url=interp.managed.url, downloaded_at=interp.managed.downloaded_at)
    assert interp.managed.url.startswith("https://mirror.example/cpython-") and interp.managed.downloaded_at
    listed, installed = calls(windows_uv / "uv-calls.jsonl")
    assert listed["argv"][:3] == ["python", "list", "cpython@3.10"]
    assert installed["argv"] == ["python", "install", "--no-bin", "--no-registry", "--install-dir", str(folder), key]
    assert "UV_PYTHON_DOWNLOADS" not in installed["uv_env"] and "UV_PYTHON_BIN_DIR" not in installed["uv_env"]
    assert not (folder / ".downloads").exists(), "the archive copy kept for hashing is removed"
    assert not (windows_uv / "user bin").exists()
    assert any(line.startswith("uv: Installed Python") for line in said)


@POSIX_FAKES
def test_windows_a_managed_python_on_disk_is_reused_without_uv(windows_uv: Path) -> None:
    folder = windows_uv / "pythons"
    first = managed.find_or_download(req("3.12"), folder=folder, policy=managed.download_policy(), echo=print)
    count = len(calls(windows_uv / "uv-calls.jsonl"))
    interpreters.clear_cache()
    again = managed.find_or_download(req("3.12"), folder=folder, policy=managed.download_policy("never"), echo=print)
    assert again.path == first.path and not again.downloaded and again.managed == first.managed
    assert len(calls(windows_uv / "uv-calls.jsonl")) == count, "no uv call at all: no network"


@POSIX_FAKES
def test_windows_an_installed_python_wins_over_a_managed_one(windows_uv: Path, pythons: dict[str, Path]) -> None:
    folder = windows_uv / "pythons"
    managed.find_or_download(req("3.12"), folder=folder, policy=managed.download_policy(), echo=print)
    registered = link_python(windows_uv / "Python312" / "python.exe", pythons["3.12"])
    make_py_launcher(windows_uv / "bin", [Entry("-V:3.12", registered)])
    interpreters.clear_cache()
    interp = managed.find_or_download(req("3.12"), folder=folder, policy=managed.download_policy(), echo=print)
    assert (interp.source, interp.path, interp.managed) == ("py launcher", registered, None)


@POSIX_FAKES
def test_windows_a_failed_download_is_exit_3_with_the_ways_out(windows_uv: Path, pythons: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = {p.parent.parent.name: os.fspath(p) for p in pythons.values()}
    uv = make_uv(windows_uv / "uv-bin" / "uv", catalog, windows_uv / "uv-calls.jsonl", fail=True)
    monkeypatch.setattr(managed, "uv_bin", lambda: str(uv))
    folder = windows_uv / "pythons"
    with pytest.raises(PythonNotFound) as caught:
        managed.find_or_download(req("3.10"), folder=folder, policy=managed.download_policy(), echo=print)
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_PYTHON_NOT_FOUND and "\n" not in message
    assert "no Python matching '3.10' found" in message and "py launcher" in message and "uv-managed" in message
    assert "client error (Connect)" in message and "'py install 3.10'" in message
    assert "UV_PYTHON_INSTALL_MIRROR" in message and "UV_PYTHON_DOWNLOADS_JSON_URL" in message
    assert managed_builds(folder) == []


@POSIX_FAKES
def test_windows_downloads_off_names_the_setting_and_calls_no_uv(windows_uv: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_PYTHON_DOWNLOADS", "never")
    with pytest.raises(PythonNotFound) as caught:
        managed.find_or_download(req("3.10.13"), folder=windows_uv / "pythons", policy=managed.download_policy(),
                                 echo=print)
    message = str(caught.value)
    assert "downloads are off (MLOPS_PYTHON_DOWNLOADS=never)" in message and "--python-downloads auto" in message
    assert "'py install 3.10.13'" in message and not calls(windows_uv / "uv-calls.jsonl")
    assert not (windows_uv / "pythons").exists(), "nothing made"


# -------------------------------------------------------------------------------- real uv, the fake download host


@pytest.fixture()
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_mirror: Mirror) -> Path:
    """No installed Python visible (PATH: git only; pyenv elsewhere); uv downloads from the fake host."""
    monkeypatch.setenv("PATH", tools_only_path(tmp_path / "tools", "git"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS_JSON_URL", python_mirror.json_url)
    return tmp_path


@pytest.mark.slow
def test_uv_downloads_verifies_and_records_then_reuses_without_network(bare: Path, python_mirror: Mirror,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = bare / "pythons"
    said, echo = lines()
    interp = managed.find_or_download(req("3.10"), folder=folder, policy=managed.download_policy(), echo=echo)
    key = python_mirror.keys["3.10"]
    assert interp.path == folder / key / "bin" / "python3.10" and interp.downloaded
    assert interp.version_text == python_mirror.version("3.10") and interp.source == "uv-managed"
    assert interp.managed is not None and interp.managed.sha256 == python_mirror.sha256["3.10"]
    assert interp.managed.verified and interp.managed.key == key and interp.managed.build == "mlopskit2"
    ran = subprocess.run([str(interp.path), "-c", "import ssl, sqlite3, sys; print(sys.prefix)"],
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert ran.stdout.strip() == str(folder / key), "runs from where it was extracted, on its own libpython"
    assert managed_builds(folder) == [key] and not (bare / "tools" / "python3.10").exists()
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS_JSON_URL", str(bare / "unreachable.json"))  # no list: no network
    interpreters.clear_cache()
    again = managed.find_or_download(req("3.10"), folder=folder, policy=managed.download_policy(), echo=echo)
    assert again.path == interp.path and not again.downloaded and again.managed == interp.managed


@pytest.mark.slow
def test_an_installed_python_is_used_and_nothing_is_downloaded(bare: Path, pythons: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    link_python(bare / "tools" / "python3.12", pythons["3.12"])
    interp = managed.find_or_download(req("3.12"), folder=bare / "pythons", policy=managed.download_policy(),
                                      echo=print)
    assert interp.source == "PATH" and interp.managed is None and not (bare / "pythons").exists()


@pytest.mark.slow
def test_a_corrupt_archive_is_exit_3_and_nothing_half_made(bare: Path, python_mirror: Mirror,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    version = python_mirror.version("3.12")
    listing = write_downloads_json(bare / "corrupt.json", {version: python_mirror.archives["3.12"]},
                                   sha256={version: "0" * 64})
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS_JSON_URL", str(listing))
    folder = bare / "pythons"
    with pytest.raises(PythonNotFound) as caught:
        managed.find_or_download(req("3.12"), folder=folder, policy=managed.download_policy(), echo=print)
    message = str(caught.value)
    assert "Hash mismatch" in message and f"computed {python_mirror.sha256['3.12']}" in message
    assert "\n" not in message and "UV_PYTHON_INSTALL_MIRROR" in message
    assert managed_builds(folder) == [] and not (folder / ".downloads").exists()


@pytest.mark.slow
def test_an_unreachable_mirror_is_exit_3_naming_the_url(bare: Path, python_mirror: Mirror,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    version = python_mirror.version("3.12")
    url = f"http://127.0.0.1:{free_port()}/pbs/cpython-{version}-install_only.tar.gz"
    listing = write_downloads_json(bare / "unreachable.json", {version: python_mirror.archives["3.12"]},
                                   urls={version: url})
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS_JSON_URL", str(listing))
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(PythonNotFound) as caught:
        managed.find_or_download(req(version), folder=bare / "pythons", policy=managed.download_policy(),
                                 echo=print)
    assert url in str(caught.value) and "Connection refused" in str(caught.value)
    assert managed_builds(bare / "pythons") == []


@pytest.mark.slow
def test_a_request_the_download_list_cannot_serve(bare: Path) -> None:
    with pytest.raises(PythonNotFound, match=r"download list \(UV_PYTHON_DOWNLOADS_JSON_URL=.*\) has no CPython "
                                             r"build matching '3.9'"):
        managed.find_or_download(req("3.9"), folder=bare / "pythons", policy=managed.download_policy(), echo=print)
    assert not (bare / "pythons").exists()


@pytest.mark.slow
def test_two_builds_needing_the_same_missing_python_download_it_once(bare: Path, python_mirror: Mirror) -> None:
    """Two create_venv.py at once (two stages on Python 3.12, one agent): one downloads, the other waits, reuses."""
    procs = []
    for name in ("a", "b"):
        folder = bare / name
        folder.mkdir()
        spec = make_spec(folder, python="3.12", name=f"venv-{name}", packages=("six",))
        out = open(bare / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "create_venv.py"), "--spec",
                                        str(spec.source), "--venv-root", str(bare / "venvs"), "--kernel-scope",
                                        "none"], stdout=out, stderr=subprocess.STDOUT), out))
    logs = []
    for process, out in procs:
        assert process.wait(timeout=600) == 0
        out.close()
    logs = [(bare / f"{n}.log").read_text(encoding="utf-8") for n in ("a", "b")]
    text = "\n".join(logs)
    assert text.count("uv: Installed Python") == 1, text
    assert text.count("downloaded Python ") == 1, text
    assert managed_builds(bare / "pythons") == [python_mirror.keys["3.12"]]
    records = [json.loads((bare / "venvs" / f"venv-{n}" / "audit" / "env.json").read_text()) for n in ("a", "b")]
    assert {r["python"]["path"] for r in records} == {str(bare / "pythons" / python_mirror.keys["3.12"] / "bin" /
                                                          "python3.12")}
    assert all(r["python"]["managed"]["sha256"] == sha256_of(python_mirror.archives["3.12"]) for r in records)


def _break(python: Path) -> None:
    python.unlink()
    python.write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")
    python.chmod(0o755)


@pytest.mark.slow
def test_a_broken_download_of_ours_is_installed_again_one_not_ours_is_left_alone(bare: Path,
                                                                                 python_mirror: Mirror) -> None:
    folder = bare / "pythons"
    first = managed.find_or_download(req("3.10"), folder=folder, policy=managed.download_policy(), echo=print)
    _break(first.path)
    stale = folder / ".downloads" / python_mirror.keys["3.10"]
    stale.mkdir(parents=True)
    (stale / "partial.tar.gz").write_bytes(b"left by a run killed mid-download")
    interpreters.clear_cache()
    said, echo = lines()
    again = managed.find_or_download(req("3.10"), folder=folder, policy=managed.download_policy(), echo=echo)
    assert again.downloaded and again.path == first.path and any("installing it again" in line for line in said)
    assert subprocess.run([str(again.path), "-c", "pass"]).returncode == 0 and not (folder / ".downloads").exists()
    (again.path.parent.parent / interpreters.MANAGED_RECORD).unlink()  # now as if uv put it there for someone else
    _break(again.path)
    interpreters.clear_cache()
    with pytest.raises(PythonNotFound, match="the toolkit did not download it; remove it"):
        managed.find_or_download(req("3.10"), folder=folder, policy=managed.download_policy(), echo=print)
    assert again.path.read_text(encoding="utf-8").startswith("#!/bin/sh"), "left as it was"
