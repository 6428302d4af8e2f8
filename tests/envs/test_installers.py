"""mlops_kit.envs.installers: freeze files, where packages come from, the installers environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_spec
from mlops_kit.core import paths
from mlops_kit.core.errors import BadInput
from mlops_kit.envs import installers
from mlops_kit.envs.installers import IndexSettings


def test_read_freeze_accepts_pins_and_direct_references(tmp_path: Path) -> None:
    path = tmp_path / "pip_freeze.txt"
    path.write_text("# frozen\nsix==1.16.0\ntomli===2.0.1  # comment\n\npkg @ https://example.org/pkg-1.0.whl\n")
    pins = installers.read_freeze(path)
    assert pins.requirements == ("six==1.16.0", "tomli===2.0.1", "pkg @ https://example.org/pkg-1.0.whl")
    path.write_text("pkg @ https://example.org/pkg-1.0.whl\nsix==1.16.0\ntomli===2.0.1\n")
    assert installers.read_freeze(path).sha256 == pins.sha256  # order does not change what is installed


@pytest.mark.parametrize(("line", "problem"), [
    ("six", "not pinned to one version"),
    ("six>=1.0", "not pinned to one version"),
    ("six==1.*", "not pinned to one version"),
    ("-e git+https://example.org/x.git#egg=x", "editable"),
    ("--index-url https://example.org/simple", "installer options"),
    ("this is not a requirement", "not a requirement"),
])
def test_read_freeze_refuses_garbage_naming_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "freeze.txt"
    path.write_text(f"six==1.16.0\n{line}\n")
    with pytest.raises(BadInput, match=rf"freeze.txt: line 2: .*{problem}"):
        installers.read_freeze(path)


def test_read_freeze_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="freeze file not found"):
        installers.read_freeze(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(BadInput, match="lists no packages"):
        installers.read_freeze(tmp_path / "empty.txt")


def test_index_settings_spec_wins_then_environment(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, extra="index_url: https://mirror.corp/simple\n"
                                      "extra_index_urls: [https://internal.corp/simple]\n")
    env = {"PIP_INDEX_URL": "https://other/simple"}
    got = installers.index_settings(spec, env)
    assert (got.url, got.extra_urls, got.origin) == ("https://mirror.corp/simple",
                                                     ("https://internal.corp/simple",), "spec")
    secret = installers.index_settings(make_spec(tmp_path), {"PIP_INDEX_URL": "https://u:secret@mirror.corp/simple"})
    assert secret.masked()["url"] == "https://***@mirror.corp/simple"
    plain = make_spec(tmp_path)
    got = installers.index_settings(plain, {"PIP_INDEX_URL": "https://a/simple", "PIP_EXTRA_INDEX_URL": "https://b https://c",
                                      "UV_INDEX": "https://b"})
    assert (got.url, got.extra_urls, got.origin) == ("https://a/simple", ("https://b", "https://c"), "environment")
    assert installers.index_settings(plain, {}).origin == "installer default"


def test_installer_env_spells_index_for_each_installer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "https://stale/simple")
    index = installers.IndexSettings("https://a/simple", ("https://b/simple", "https://c/simple"), "spec")
    uv_env = installers.installer_env("uv", index)
    assert uv_env["UV_DEFAULT_INDEX"] == "https://a/simple"
    assert uv_env["UV_INDEX"] == "https://b/simple https://c/simple"
    assert "UV_INDEX_URL" not in uv_env
    pip_env = installers.installer_env("pip", index)
    assert pip_env["PIP_INDEX_URL"] == "https://a/simple"
    assert pip_env["PIP_EXTRA_INDEX_URL"] == "https://b/simple https://c/simple"


def test_parse_freeze_is_the_one_freeze_reader() -> None:
    text = ("# a comment\nSix==1.17.0\nzope.interface==7.2  # inline note\n"
            "mypkg @ file:///C:/wheels/mypkg-1.0-py3-none-any.whl\n-e /src/editable\n\n")
    assert installers.parse_freeze(text) == {
        "six": "1.17.0", "zope-interface": "7.2", "mypkg": "mypkg @ file:///C:/wheels/mypkg-1.0-py3-none-any.whl",
        "/src/editable": "-e /src/editable"}


def test_install_commands_require_hashes_and_keep_index_urls_off_the_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock, venv = tmp_path / "s.lock.txt", tmp_path / "venv"
    python = paths.venv_python(venv)
    uv_cmd = installers.locked_install_command(venv, lock, "uv")
    assert uv_cmd[1:] == ["pip", "sync", "--require-hashes", "--python", python, lock]
    assert installers.locked_install_command(venv, lock, "pip") == [
        python, "-m", "pip", "install", "--require-hashes", "--no-deps", "--no-input",
        "--disable-pip-version-check", "-r", lock]
    monkeypatch.setenv("UV_NO_VERIFY_HASHES", "1")
    index = IndexSettings("https://u:tok@mirror/simple", ("https://x/simple",), "environment")
    env = installers.installer_env("pip", index)
    assert env["PIP_INDEX_URL"] == "https://u:tok@mirror/simple" and env["PIP_EXTRA_INDEX_URL"] == "https://x/simple"
    assert "UV_NO_VERIFY_HASHES" not in env and "UV_DEFAULT_INDEX" not in env
