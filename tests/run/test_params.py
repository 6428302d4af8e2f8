"""Params files, -p overrides, flattening and masking (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_notebook import NOTEBOOKS
from mlops_kit.core.errors import BadInput
from mlops_kit.run import params
from mlops_kit.run.notebook import load_notebook


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_params_file_nested_mapping(tmp_path: Path) -> None:
    got = params.load_params_file(write(tmp_path / "p.yaml", "lr: 0.1\nmodel:\n  depth: 3\n  name: rf\nflag: true\n"))
    assert got == {"lr": 0.1, "model": {"depth": 3, "name": "rf"}, "flag": True}


def test_empty_params_file_is_an_empty_mapping(tmp_path: Path) -> None:
    assert params.load_params_file(write(tmp_path / "p.yaml", "# nothing yet\n")) == {}


@pytest.mark.parametrize(("text", "message"), [
    ("- 1\n- 2\n", "must be a YAML mapping"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("a: [1,\n", "invalid YAML"),
    ("bad-name: 1\n", "parameter 'bad-name': not a valid Python variable name"),
    ("class: 1\n", "parameter 'class'"),
    ("1abc: 1\n", "parameter '1abc'"),
    ("output_dir: x\n", "reserved"),
])
def test_bad_params_file_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "my params.yaml", text)
    with pytest.raises(BadInput) as err:
        params.load_params_file(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="params file not found"):
        params.load_params_file(tmp_path / "nope.yaml")
    with pytest.raises(BadInput, match="is a folder"):
        params.load_params_file(tmp_path)


@pytest.mark.parametrize(("value", "expected"), [
    ("0.1", 0.1), ("3", 3), ("true", True), ("null", None), ("hello", "hello"), ('"007"', "007"),
    ("[64, 32]", [64, 32]), ("{a: 1}", {"a": 1}), ("", ""), ("C:\\data\\raw files", "C:\\data\\raw files"),
])
def test_override_values_are_yaml(value: str, expected: object) -> None:
    assert params.parse_override("x", value) == (("x",), expected)


@pytest.mark.parametrize("name", ["", "bad-name", "1x", "a..b", "a.", "class", "x y"])
def test_override_bad_names(name: str) -> None:
    with pytest.raises(BadInput, match="-p"):
        params.parse_override(name, "1")


def test_override_bad_yaml_and_reserved() -> None:
    with pytest.raises(BadInput, match="not valid YAML"):
        params.parse_override("x", "[1,")
    with pytest.raises(BadInput, match="reserved"):
        params.parse_override("output_dir", "x")


def test_merge_overrides_nested_and_in_order() -> None:
    base = {"lr": 0.1, "model": {"depth": 3}, "tags": "a"}
    merged = params.merge_overrides(base, [("model.depth", "5"), ("model.opt.name", "adam"), ("lr", "0.2"),
                                           ("lr", "0.3"), ("tags.sub", "1")])
    assert merged == {"lr": 0.3, "model": {"depth": 5, "opt": {"name": "adam"}}, "tags": {"sub": 1}}
    assert base == {"lr": 0.1, "model": {"depth": 3}, "tags": "a"}  # not modified


def test_flatten() -> None:
    assert params.flatten({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": {}, "f": None}) == {
        "a.b.c": 1, "a.d": [1, 2], "e": {}, "f": None}


def test_declared_parameters_and_warnings() -> None:
    nb = load_notebook(NOTEBOOKS / "fails.ipynb")
    assert params.declared_parameters(nb) == {"output_dir", "step"}
    assert params.undeclared_warnings(nb, ["step", "output_dir"], notebook=Path("fails.ipynb")) == []
    (warning,) = params.undeclared_warnings(nb, ["step", "stpe"], notebook=Path("fails.ipynb"))
    assert "'stpe' is not declared" in warning
    bare = load_notebook(NOTEBOOKS / "no_params.ipynb")
    assert params.declared_parameters(bare) is None
    (warning,) = params.undeclared_warnings(bare, [], notebook=Path("no_params.ipynb"))
    assert "no cell tagged 'parameters'" in warning


def test_yaml_text_round_trips() -> None:
    import yaml

    values = {"b": 1, "a": {"x": [1, 2]}, "s": "ñandú"}
    assert yaml.safe_load(params.yaml_text(values)) == values


def test_a_secret_value_is_never_echoed_in_an_override_error() -> None:
    with pytest.raises(BadInput) as info:
        params.parse_override("db_password", "hunter2: [")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_many_undeclared_names_are_one_warning() -> None:
    nb = load_notebook(NOTEBOOKS / "fails.ipynb")
    three = params.undeclared_warnings(nb, ["a", "b", "c"], notebook=Path("fails.ipynb"))
    assert len(three) == 3
    (warning,) = params.undeclared_warnings(nb, ["step", *(f"k{i}" for i in range(20_000))],
                                            notebook=Path("fails.ipynb"))
    assert "20000 parameters are not declared" in warning and "'k0', 'k1', 'k2' and 19997 more" in warning


def test_a_data_file_given_as_params_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """A wrong file (a dataset) would take minutes to parse, log and inject: a size and a count limit."""
    huge = tmp_path / "huge.yaml"
    huge.write_text("rows: [" + "1," * (params.MAX_FILE_BYTES // 2) + "1]\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"huge.yaml: params file of 1\.0 MiB, at most 1 MiB: parameters, not data"):
        params.load_params_file(huge)
    many = {f"k{i}": {"a": i} for i in range(params.MAX_PARAMS)}
    params.check_count(many, source="p.yaml")  # exactly the limit
    with pytest.raises(BadInput, match=r"p.yaml: 1001 parameters \(nested keys counted one by one\), at most 1000"):
        params.check_count({**many, "one_more": 1}, source="p.yaml")


def test_declared_defaults_are_the_literals_of_the_parameters_cell() -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('api_key = "sk-dev"  # the key\nn = 3\npath = Path("x")\ncfg = {"pw": "p1"}\n')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), cell]
    assert params.declared_defaults(nb) == {"api_key": "sk-dev", "n": 3, "cfg": {"pw": "p1"}}
    assert params.declared_defaults(nbformat.v4.new_notebook()) == {}
