"""mlops_kit.core.paths: the venv layout on each platform, the venv root rule, safe file writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlops_kit.core import paths


def test_layout_posix_and_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    venv = Path("/venvs/ingest")
    assert paths.venv_python(venv) == venv / "bin" / "python"
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    assert paths.venv_bin_dir(venv) == venv / "Scripts"
    assert paths.venv_python(venv) == venv / "Scripts" / "python.exe"


def test_default_venv_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.default_venv_root() == tmp_path / "xdg" / "mlops_kit" / "venvs"
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert paths.default_venv_root() == tmp_path / "Local" / "mlops_kit" / "venvs"


def test_rmtree_clears_read_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree" / "sub"
    tree.mkdir(parents=True)
    (tree / "ro.txt").write_text("x")
    os.chmod(tree / "ro.txt", 0o444)
    paths.rmtree(tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


def test_one_venv_root_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--venv-root, else ML_VENV_ROOT (a trailing space from cmd's `set X=... ` dropped), else the default."""
    monkeypatch.setenv("ML_VENV_ROOT", f"{tmp_path / 'from env'} ")
    assert paths.venv_root(tmp_path / "arg") == tmp_path / "arg"
    assert paths.venv_root() == tmp_path / "from env"
    monkeypatch.setenv("ML_VENV_ROOT", "  ")
    assert paths.venv_root() == paths.default_venv_root()


def test_write_json_atomic_concurrent_writers(tmp_path: Path) -> None:
    """Unique temp names: parallel writers of one file (two kernel registrations) never collide."""
    import threading

    target = tmp_path / "kernel.json"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _ in range(50):
                paths.write_json_atomic(target, {"n": n})
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.loads(target.read_text())["n"] in range(4)
    assert [p.name for p in tmp_path.iterdir()] == ["kernel.json"]  # no temp files left behind


def test_inside_compares_absolute_paths_as_written_and_ignores_case_on_windows(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert paths.inside("out/x.ipynb", tmp_path) and paths.inside(tmp_path, tmp_path)
    assert not paths.inside(tmp_path / "outputs2", tmp_path / "outputs"), "a longer name is not a subfolder"
    assert not paths.inside(tmp_path, tmp_path / "sub")
    assert not paths.inside(tmp_path / "Data" / "x", tmp_path / "data"), "exact on POSIX"
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    assert paths.inside(tmp_path / "Data" / "x", tmp_path / "data"), "case-insensitive on Windows"
