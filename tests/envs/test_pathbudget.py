"""mlops_kit.envs.pathbudget: the longest path a venv will hold against Windows' limits, before anything is built.

The arithmetic runs for real on Linux with the win32 seam; the long-paths setting comes from a fake registry."""

from __future__ import annotations

import zipfile
from pathlib import Path, PureWindowsPath

import pytest
from fakes.registry import REG_DWORD, FakeWinreg

from helpers import REPO_ROOT, make_spec
from mlops_kit.core import paths, registry
from mlops_kit.core.errors import BadInput
from mlops_kit.envs import build, lockfile, pathbudget, spec
from mlops_kit.envs.audit import LongestPath

STAGES = ("ingest", "features", "train")
GOCD_AGENT_DEFAULT = "C:\\Program Files (x86)\\Go Agent\\pipelines\\ml-example"  # NSIS $PROGRAMFILES\Go Agent


@pytest.fixture()
def windows(monkeypatch: pytest.MonkeyPatch) -> FakeWinreg:
    """The seam says win32; the registry has long paths off (Windows' default)."""
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    machine = FakeWinreg()
    machine.set_value("HKLM", registry.LONG_PATHS_KEY, "LongPathsEnabled", 0, REG_DWORD)
    monkeypatch.setattr(registry, "_WINREG", machine)
    return machine


def example(stage: str) -> tuple[spec.StageSpec, lockfile.Lock]:
    return spec.load_spec(REPO_ROOT / "specs" / f"{stage}.yaml"), lockfile.read_lock(REPO_ROOT / "specs" /
                                                                                     f"{stage}.lock.txt")


def test_where_a_wheel_member_lands_in_a_windows_venv() -> None:
    assert pathbudget.in_venv("sklearn/utils/_param.py") == "Lib\\site-packages\\sklearn\\utils\\_param.py"
    assert pathbudget.in_venv("pkg-1.0.data/purelib/pkg/x.py") == "Lib\\site-packages\\pkg\\x.py"
    assert pathbudget.in_venv("pkg-1.0.data/platlib/pkg/x.pyd") == "Lib\\site-packages\\pkg\\x.pyd"
    assert pathbudget.in_venv("pkg-1.0.data/scripts/tool.py") == "Scripts\\tool.py"
    assert pathbudget.in_venv("ipykernel-7.4.0.data/data/share/jupyter/kernels/python3/logo-svg.svg") == \
        "share\\jupyter\\kernels\\python3\\logo-svg.svg"
    assert pathbudget.longest_of(["a\\b\\c.txt", "a\\bbbbbb.txt", "top.txt"]) == \
        LongestPath(file="a\\bbbbbb.txt", folder="a\\b")


def test_the_table_measures_every_windows_pin_of_the_example_locks() -> None:
    for stage in STAGES:
        _spec, lock = example(stage)
        missing = sorted(pathbudget.windows_pins(lock) - pathbudget.table().keys())
        assert not missing, f"{stage}: run tools/measure_wheel_paths.py (missing {missing})"
    assert "colorama==0.4.6" in pathbudget.windows_pins(example("train")[1])  # a Windows-only pin is measured


@pytest.mark.parametrize("root", ["C:\\ml_venvs", "C:\\ProgramData\\mlops_kit\\venvs",
                                  f"{GOCD_AGENT_DEFAULT}\\venvs"])
def test_the_example_specs_fit_windows_limits(windows: FakeWinreg, root: str) -> None:
    """Under C:\\ml_venvs, a service account's default, and even inside GoCD's default agent folder (where venvs
    should not live: they go under ML_VENV_ROOT, outside the working directory)."""
    for stage in STAGES:
        stage_spec, lock = example(stage)
        found = pathbudget.estimate(str(PureWindowsPath(root, stage_spec.venv_name)), lock)
        assert found.over() is None and not found.unmeasured, found.describe()
        assert found.file_length <= pathbudget.MAX_FILE - 40, found.describe()  # and with room to spare
        pathbudget.check(found, spec=stage_spec.source)


def test_the_longest_example_path_and_the_longest_root_that_fits(windows: FakeWinreg) -> None:
    """The figures the README gives: C:\\ml_venvs\\ml_features_py311 holds the longest file, a jedi typeshed stub."""
    _spec, lock = example("features")
    found = pathbudget.estimate("C:\\ml_venvs\\ml_features_py311", lock)
    assert found.longest is not None and found.longest.file.startswith("Lib\\site-packages\\jedi\\third_party\\")
    assert (found.file_length, found.folder_length) == (165, 133)
    longest_root = min(pathbudget.MAX_FILE - pathbudget.estimate(f"\\{example(s)[0].venv_name}", example(s)[1])
                       .file_length for s in STAGES)
    assert longest_root == 105  # characters of venv root (C:\ml_venvs is 11) that every example spec fits under


def test_a_root_too_deep_is_exit_2_naming_the_file_and_both_fixes(windows: FakeWinreg) -> None:
    stage_spec, lock = example("features")
    root = "D:\\" + "\\".join(["a deep folder of the agent"] * 4)
    found = pathbudget.estimate(str(PureWindowsPath(root, stage_spec.venv_name)), lock)
    with pytest.raises(BadInput) as info:
        pathbudget.check(found, spec=stage_spec.source)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert message.startswith(f"{stage_spec.source}: {root}\\ml_features_py311\\Lib\\site-packages\\jedi\\")
    assert f"would be {found.file_length} characters" in message and "limit of 259" in message
    assert "use a shorter venv root (ML_VENV_ROOT or --venv-root" in message and "LongPathsEnabled=1" in message
    pathbudget.check(found, spec=stage_spec.source, long_paths=True)  # long paths on: fine
    windows.set_value("HKLM", registry.LONG_PATHS_KEY, "LongPathsEnabled", 1, REG_DWORD)
    pathbudget.check(found, spec=stage_spec.source)  # read from the registry


def test_a_folder_past_its_own_limit_is_named(windows: FakeWinreg) -> None:
    found = pathbudget.Estimate("C:\\v", LongestPath(file="x" * 10, folder="f\\" * 123), "test")
    assert found.file_length < pathbudget.MAX_FILE < found.folder_length + 12
    assert "the folder C:\\v\\f\\f" in (found.over() or "") and "limit of 247 for folders" in (found.over() or "")


def test_off_windows_the_budget_is_only_reported(tmp_path: Path) -> None:
    stage_spec, lock = example("train")
    found = pathbudget.estimate(tmp_path / ("x" * 250), lock)
    assert found.over() is not None
    pathbudget.check(found, spec=stage_spec.source)  # Linux: no such limit, nothing raised


def test_unmeasured_pins_and_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = lockfile.read_lock(REPO_ROOT / "specs" / "train.lock.txt")
    without_jedi = {k: v for k, v in pathbudget.table().items() if not k.startswith("jedi==")}
    monkeypatch.setattr(pathbudget, "table", lambda: without_jedi)
    found = pathbudget.estimate(tmp_path / "v", lock)
    assert [p for p in found.unmeasured if p.startswith("jedi==")] and "unmeasured: " in found.describe()
    assert pathbudget.estimate(tmp_path / "v", None).longest is None


def test_the_last_build_s_measure_counts_for_a_rebuild(tmp_path: Path) -> None:
    lock = lockfile.read_lock(REPO_ROOT / "specs" / "train.lock.txt")
    deeper = LongestPath(file="Lib\\site-packages\\" + "d" * 200 + ".py", folder="Lib\\site-packages")
    found = pathbudget.estimate(tmp_path / "v", lock, deeper)
    assert found.longest is not None and found.longest.file == deeper.file
    assert found.source == "the last build of this venv (env.json)"


def test_measure_venv(tmp_path: Path) -> None:
    (tmp_path / "Lib" / "site-packages" / "pkg" / "deep").mkdir(parents=True)
    (tmp_path / "Lib" / "site-packages" / "pkg" / "deep" / "m.py").write_text("")
    (tmp_path / "Lib" / "site-packages" / "a_rather_long_module_name.py").write_text("")
    measured = pathbudget.measure_venv(tmp_path)
    assert measured == LongestPath(file=str(Path("Lib/site-packages/a_rather_long_module_name.py")),
                                   folder=str(Path("Lib/site-packages/pkg/deep")))
    assert pathbudget.measure_venv(tmp_path / "nothing") is None


def test_create_venv_refuses_a_deep_root_before_anything_is_written(windows: FakeWinreg, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The tool itself, in this process (the seam says win32): exit 2, one line, no venv root, no Python looked for."""
    import create_venv
    from mlops_kit.envs import interpreters

    monkeypatch.setattr(interpreters, "find_python", lambda *a, **k: pytest.fail("looked for a Python"))
    root = tmp_path / ("deep folder " * 12).strip().replace(" ", "_") / "venvs"
    code = create_venv.main(["--spec", str(REPO_ROOT / "specs" / "features.yaml"), "--venv-root", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "ml_features_py311" in err and "past Windows' limit of 259" in err and "LongPathsEnabled=1" in err
    assert not root.exists() and not (tmp_path / "deep_folder").exists()


def test_a_wheel_measured_like_the_tool_does(tmp_path: Path) -> None:
    """The members of a real zip, placed as the table's tool places them."""
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("pkg/__init__.py", "pkg/sub/deeper/module_with_a_long_name.py", "pkg-1.0.data/scripts/run",
                     "pkg-1.0.dist-info/RECORD"):
            zf.writestr(name, "")
    with zipfile.ZipFile(wheel) as zf:
        found = pathbudget.longest_of(pathbudget.in_venv(i.filename) for i in zf.infolist() if not i.is_dir())
    assert found == LongestPath(file="Lib\\site-packages\\pkg\\sub\\deeper\\module_with_a_long_name.py",
                                folder="Lib\\site-packages\\pkg-1.0.dist-info")


def test_build_records_the_measure_and_reads_it_back(tmp_path: Path) -> None:
    """``env.json``'s ``longest_path`` round-trips through the record (the rebuild's budget reads it)."""
    from mlops_kit.envs import audit

    record_path = tmp_path / "v" / "audit" / "env.json"
    record_path.parent.mkdir(parents=True)
    spec_ = make_spec(tmp_path)
    assert build.budget(tmp_path / "v", None).longest is None
    import json

    data = {"stage": "demo", "venv_name": "v", "venv_path": str(tmp_path / "v"), "venv_python": "p",
            "kernel_name": "v", "kernel_display_name": "d", "python": {"path": "p", "version": "3.12.1"},
            "platform": "x", "installer": {"name": "uv", "version": "1"}, "spec_hash": spec_.content_hash(),
            "cache_key": "k", "created_at": "t", "toolkit": {"version": "0", "git_sha": "g"}, "packages": [],
            "sys_platform": paths._PLATFORM, "longest_path": {"file": "Lib/x.py", "folder": "Lib"}}
    record_path.write_text(json.dumps(data))
    assert audit.read_env(tmp_path / "v").longest_path == LongestPath(file="Lib/x.py", folder="Lib")
    assert build.budget(tmp_path / "v", None).longest == LongestPath(file="Lib/x.py", folder="Lib")


def test_bytecode_is_not_counted(tmp_path: Path) -> None:
    """Optional: Python and pip skip the bytecode they cannot write, as the table leaves it out."""
    (tmp_path / "Lib" / "m" / "__pycache__").mkdir(parents=True)
    (tmp_path / "Lib" / "m" / "x.py").write_text("")
    (tmp_path / "Lib" / "m" / "__pycache__" / "x.cpython-312.pyc").write_text("")
    assert pathbudget.measure_venv(tmp_path) == LongestPath(file=str(Path("Lib/m/x.py")), folder=str(Path("Lib/m")))
