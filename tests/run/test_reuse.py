"""The reuse key (mlops_kit.run.reuse): what is in it, what is not, and the phrase a miss prints."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import nbformat
import pytest

from mlops_kit.core.errors import BadInput
from mlops_kit.envs import audit, spec
from mlops_kit.run import lineage, reuse


def _nb(*sources: str, markdown: str = "# title") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown)] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[1].metadata["tags"] = ["parameters"]
    return nb


def _env(tmp_path: Path, *, lock_sha: str | None = "a" * 64, freeze: str = "six==1.16.0\n",
         version: str = "3.12.4") -> audit.EnvRecord:
    venv = tmp_path / "venv"
    (venv / audit.AUDIT).mkdir(parents=True, exist_ok=True)
    (venv / audit.AUDIT / audit.FREEZE_TXT).write_text(freeze, encoding="utf-8")
    lock = audit.LockInfo("spec.lock.txt", lock_sha, "3.12", "h", "2026-01-01", 3) if lock_sha else None
    return audit.EnvRecord(
        stage="train", venv_name="v", venv_path=str(venv), venv_python="python", kernel_name="k",
        kernel_display_name="K", python=audit.PythonInfo("/usr/bin/python3", version), platform="linux",
        installer=audit.InstallerInfo("uv", "0.5"), spec_hash="h", cache_key="c", created_at="now",
        toolkit=audit.ToolkitInfo("1", "3.11"), packages=["six==1.16.0"], sys_platform="linux", lock=lock,
        venv_dir=venv)


def _key(tmp_path: Path, nb: nbformat.NotebookNode | None = None, values: dict | None = None,
         env: audit.EnvRecord | None = None, *, inputs_from: dict | None = None) -> reuse.ReuseKey:
    """A finished key: ``values`` as logged, inputs found and hashed like a run does it."""
    values = {"alpha": 0.5, "output_dir": str(tmp_path / "out"), **(values or {})}
    record = lineage.new_record(values, cwd=tmp_path, output_dir=tmp_path / "out", excluded=[], python="3.12.4",
                                notebook="nb.ipynb", source_notebook=None, parameters="p", masked=values)
    key = reuse.new_key(nb or _nb("alpha = 1", "print(alpha)"), values, env or _env(tmp_path),
                        [item.param for item in record.inputs])
    lineage.hash_inputs(record, warn=lambda _: None)
    assert reuse.with_inputs(key, record) is None
    return key


def test_the_same_run_twice_has_the_same_key(tmp_path: Path) -> None:
    assert _key(tmp_path).digest == _key(tmp_path).digest
    assert len(_key(tmp_path).digest) == 64


def test_output_dir_and_secret_named_parameters_are_not_in_the_key(tmp_path: Path) -> None:
    base = _key(tmp_path, values={"db_password": "***", "api": {"token": "***"}})
    moved = _key(tmp_path, values={"output_dir": "/elsewhere", "db_password": "***", "api": {"token": "***"}})
    assert base.digest == moved.digest
    assert not any("password" in name or "token" in name or name == "output_dir" for name in base.parameters)


def test_cosmetic_notebook_changes_keep_the_key(tmp_path: Path) -> None:
    """Markdown, outputs, execution counts, ids and metadata are not code."""
    nb = _nb("alpha = 1", "print(alpha)")
    edited = copy.deepcopy(nb)
    edited.cells[0].source = "# another title"
    edited.cells[2].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    edited.cells[2].execution_count = 7
    edited.cells[2].metadata["collapsed"] = True
    edited.metadata["kernelspec"] = {"name": "other"}
    assert _key(tmp_path, nb).digest == _key(tmp_path, edited).digest


def test_each_component_changes_the_key_and_names_itself(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("1,2\n", encoding="utf-8")
    base = _key(tmp_path, values={"input_file": "data.csv"})
    changes = {
        "notebook code changed (cell 3)": dict(nb=_nb("alpha = 1", "print(alpha * 2)")),
        "parameter alpha: 0.5 -> 0.25": dict(values={"input_file": "data.csv", "alpha": 0.25}),
        "python 3.12.4 -> 3.12.5": dict(env=_env(tmp_path, version="3.12.5")),
        "environment changed (lock aaaaaaaaaaaa -> bbbbbbbbbbbb)": dict(env=_env(tmp_path, lock_sha="b" * 64)),
    }
    for phrase, change in changes.items():
        other = _key(tmp_path, **{"values": {"input_file": "data.csv"}, **change})
        assert other.digest != base.digest, phrase
        assert reuse.differences(base, other) == [phrase]
    data.write_text("1,3\n", encoding="utf-8")
    changed = _key(tmp_path, values={"input_file": "data.csv"})
    [phrase] = reuse.differences(base, changed)
    assert phrase.startswith("input input_file changed (sha256 ") and changed.digest != base.digest
    other_os = dataclasses.replace(base, platform="win32-AMD64")
    assert reuse.differences(base, other_os) == [f"platform {base.platform} -> win32-AMD64"]
    assert reuse.differences(base, dataclasses.replace(base, schema=2)) == \
        ["reuse key schema 1 -> 2 (another toolkit version)"]


def test_an_input_enters_by_content_not_by_path(tmp_path: Path) -> None:
    """GoCD fetches an artifact into another job's folder: same bytes, another path, same key."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "raw.csv").write_text("x\n1\n", encoding="utf-8")
    first = _key(tmp_path, values={"input_dir": "a"})
    second = _key(tmp_path, values={"input_dir": str(tmp_path / "b")})
    assert first.digest == second.digest
    assert first.parameters["input_dir"] == reuse.INPUT_VALUE


def test_without_a_lock_the_sorted_freeze_is_the_environment(tmp_path: Path) -> None:
    one = _env(tmp_path / "1", lock_sha=None, freeze="b==1\na==2\n")
    other = _env(tmp_path / "2", lock_sha=None, freeze="a==2\nb==1\n")
    upgraded = _env(tmp_path / "3", lock_sha=None, freeze="a==3\nb==1\n")
    assert reuse.environment_of(one) == reuse.environment_of(other)
    assert reuse.environment_of(one) != reuse.environment_of(upgraded)
    assert set(reuse.environment_of(one)) == {"freeze_sha256"}


def test_an_input_that_could_not_be_hashed_makes_no_key(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    values = {"input_dir": "big", "output_dir": str(tmp_path / "out")}
    record = lineage.new_record(values, cwd=tmp_path, output_dir=tmp_path / "out", excluded=[], python="3",
                                notebook="n", source_notebook=None, parameters="p", masked=values)
    record.inputs[0].hashed = lineage.Tree("folder", None, 0, [], [], "more than 100000 files: not hashed")
    key = reuse.new_key(_nb("x = 1"), values, _env(tmp_path), [i.param for i in record.inputs])
    assert "input input_dir" in (reuse.with_inputs(key, record) or "")
    assert key.inputs is None
    with pytest.raises(ValueError):
        key.digest  # noqa: B018 - the property raises


def test_the_record_lists_every_component_and_reads_back(tmp_path: Path) -> None:
    key = _key(tmp_path, values={"cfg": {"layers": [64, 32]}})
    data = key.to_json()
    assert data["key"] == key.digest and set(data["components"]) == {
        "notebook", "parameters", "inputs", "environment", "python", "platform"}
    assert all("digest" in part for part in data["components"].values())
    assert reuse.ReuseKey.from_json(data) == key
    (tmp_path / "k.json").write_text(__import__("json").dumps(data), encoding="utf-8")
    assert reuse.read_json(tmp_path / "k.json") == key
    with pytest.raises(ValueError, match="not a reuse key record"):
        reuse.ReuseKey.from_json({"schema": 1})


def test_mlops_reuse_never_turns_reuse_off() -> None:
    assert reuse.disabled_by_environment({"MLOPS_REUSE": "never"})
    assert reuse.disabled_by_environment({"MLOPS_REUSE": " Never "})
    assert not reuse.disabled_by_environment({"MLOPS_REUSE": "auto"})
    assert not reuse.disabled_by_environment({})
    for typo in ("off", "0", "false", "nevr"):
        with pytest.raises(BadInput, match=f"MLOPS_REUSE='{typo}': choose one of auto, never"):
            reuse.disabled_by_environment({"MLOPS_REUSE": typo})


def test_the_spec_field_is_a_boolean(tmp_path: Path) -> None:
    text = ("stage: s\npython_version: \"3.12\"\nvenv_name: v\npackages: [six]\nkernel_display_name: K\n")
    assert spec.parse_spec(text, source=Path("s.yaml")).reuse is False
    on = spec.parse_spec(text + "reuse: true\n", source=Path("s.yaml"))
    assert on.reuse is True
    assert on.content_hash() == spec.parse_spec(text, source=Path("s.yaml")).content_hash()  # not the env
    with pytest.raises(BadInput, match=r"s.yaml: field 'reuse': must be true or false"):
        spec.parse_spec(text + "reuse: \"yes\"\n", source=Path("s.yaml"))
