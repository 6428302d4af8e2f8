"""Stage spec validation: every bad input is one line naming the file and the field, exit code 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from mlops_kit.core import cli
from mlops_kit.core.errors import EXIT_BAD_INPUT, BadInput
from mlops_kit.envs.spec import StageSpec, load_spec, parse_python_request

GOOD = {
    "stage": "ingest",
    "python_version": '"3.10"',
    "venv_name": "ml-ingest-py310",
    "packages": '["six==1.16.0", "pyyaml>=6"]',
    "kernel_display_name": '"Ingest (Python 3.10)"',
}


def spec_text(**fields: str | None) -> str:
    """A spec in flow-style YAML: GOOD with ``fields`` replaced (None drops a field)."""
    merged = {**GOOD, **fields}
    return "".join(f"{key}: {value}\n" for key, value in merged.items() if value is not None)


def write(tmp_path: Path, text: str, name: str = "stage.yaml") -> Path:
    path = tmp_path / "specs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def bad(tmp_path: Path, text: str, *, field: str | None, contains: str = "") -> str:
    """Load ``text`` expecting BadInput: exit 2, one line, naming the file (and the field)."""
    path = write(tmp_path, text)
    with pytest.raises(BadInput) as info:
        load_spec(path)
    message = str(info.value)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in message
    assert str(path) in message
    if field is not None:
        assert f"'{field}'" in message, message
    assert contains in message, message
    return message


# ------------------------------------------------------------------------------------------------- valid


def test_valid_spec_parses(tmp_path: Path) -> None:
    path = write(tmp_path, spec_text())
    spec = load_spec(path)
    assert spec == StageSpec(stage="ingest", python=spec.python, venv_name="ml-ingest-py310",
                             packages=("six==1.16.0", "pyyaml>=6"), kernel_display_name="Ingest (Python 3.10)",
                             index_url=None, extra_index_urls=(), description=None)
    assert (spec.python.text, spec.python.specifier, spec.python.exact) == ("3.10", SpecifierSet("==3.10.*"), None)
    assert spec.python.accepts((3, 10, 13)) and not spec.python.accepts((3, 11, 0))
    assert spec.source == path and spec.text == path.read_text(encoding="utf-8")


def test_valid_spec_with_optional_index_settings(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        # stage spec with a corporate mirror
        stage: train
        description: Train the model
        python_version: ">=3.10,<3.13"
        venv_name: ml_train.v2
        packages:
          - scikit-learn>=1.3,<2
          - "requests[socks] ; python_version >= '3.8'"
          - mypkg @ https://example.com/mypkg-1.0-py3-none-any.whl
        kernel_display_name: Train
        index_url: https://nexus.example.com/repository/pypi/simple
        extra_index_urls:
          - https://download.pytorch.org/whl/cpu
        """)
    spec = load_spec(write(tmp_path, text))
    assert spec.index_url == "https://nexus.example.com/repository/pypi/simple"
    assert spec.extra_index_urls == ("https://download.pytorch.org/whl/cpu",)
    assert spec.description == "Train the model"
    assert len(spec.packages) == 3
    assert spec.python.accepts((3, 12, 1)) and not spec.python.accepts((3, 13, 0))


def test_content_hash_ignores_comments_and_order(tmp_path: Path) -> None:
    one = load_spec(write(tmp_path, spec_text(), "one.yaml"))
    two = load_spec(write(tmp_path, "# comment\n" + spec_text(packages='["pyyaml>=6", "six==1.16.0"]'), "two.yaml"))
    three = load_spec(write(tmp_path, spec_text(packages='["six==1.16.0"]'), "three.yaml"))
    assert one.content_hash() == two.content_hash() != three.content_hash()


def test_utf8_bom_and_crlf_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "notepad.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + spec_text().replace("\n", "\r\n").encode())
    assert load_spec(path).stage == "ingest"


@pytest.mark.parametrize(("text", "exact", "accepts", "refuses"), [
    ("3.8", None, (3, 8, 18), (3, 9, 0)),
    ("3.8.10", "3.8.10", (3, 8, 10), (3, 8, 18)),
    (">=3.10,<3.13", None, (3, 12, 1), (3, 13, 0)),
    ("~=3.11.0", None, (3, 11, 7), (3, 12, 0)),
])
def test_python_requests(text: str, exact: str | None, accepts: tuple, refuses: tuple) -> None:
    request = parse_python_request(text)
    assert (str(request.exact) if request.exact else None) == exact
    assert request.accepts(accepts) and not request.accepts(refuses)


# ------------------------------------------------------------------------------------------ bad structure


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"stage\.yaml: spec file not found") as info:
        load_spec(tmp_path / "stage.yaml")
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="spec file is a folder, expected a file"):
        load_spec(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(spec_text(kernel_display_name='"Análisis"').encode("latin-1"))
    with pytest.raises(BadInput, match="cannot read spec file"):
        load_spec(path)


def test_invalid_yaml(tmp_path: Path) -> None:
    message = bad(tmp_path, "stage: ingest\npackages: [six\n", field=None, contains="invalid YAML")
    assert "line" in message


def test_duplicate_keys(tmp_path: Path) -> None:
    bad(tmp_path, spec_text() + "packages: [numpy]\n", field="packages", contains="duplicate key")


@pytest.mark.parametrize("key", ["[a, b]", "{a: 1}", "? [x]\n"])
def test_unhashable_key_is_bad_input_not_a_crash(tmp_path: Path, key: str) -> None:
    text = spec_text() + (key if key.startswith("?") else f"{key}: 2\n")
    message = bad(tmp_path, text, field=None, contains="invalid YAML: unhashable key")
    assert f"{tmp_path / 'specs' / 'stage.yaml'}: line " in message


def test_yaml_error_without_a_mark_has_no_double_colon(tmp_path: Path) -> None:
    message = bad(tmp_path, "stage: ingest\x00\n", field=None, contains="invalid YAML")
    assert "::" not in message


@pytest.mark.parametrize("text", ["- stage: ingest\n", "just a string\n", "42\n"])
def test_non_mapping_file(tmp_path: Path, text: str) -> None:
    bad(tmp_path, text, field=None, contains="must be a YAML mapping")


def test_empty_file(tmp_path: Path) -> None:
    bad(tmp_path, "", field="stage", contains="missing")


@pytest.mark.parametrize("field", ["stage", "python_version", "venv_name", "packages", "kernel_display_name"])
def test_missing_required_field(tmp_path: Path, field: str) -> None:
    bad(tmp_path, spec_text(**{field: None}), field=field, contains="missing")


@pytest.mark.parametrize(("typo", "suggestion"), [("pyhton_version", "python_version"), ("package", "packages"),
                                                  ("venvname", "venv_name"), ("index-url", "index_url"),
                                                  ("kernel_name", "kernel_display_name")])
def test_unknown_key_with_did_you_mean(tmp_path: Path, typo: str, suggestion: str) -> None:
    bad(tmp_path, spec_text() + f"{typo}: x\n", field=typo, contains=f"did you mean '{suggestion}'")


def test_unknown_key_without_close_match_lists_fields(tmp_path: Path) -> None:
    bad(tmp_path, spec_text() + "zzz: 1\n", field="zzz", contains="known fields")


# ---------------------------------------------------------------------------------------------- bad types


@pytest.mark.parametrize(("field", "value"), [
    ("stage", "[a, b]"), ("stage", "12"), ("venv_name", "{a: 1}"), ("venv_name", "true"),
    ("kernel_display_name", "[x]"), ("kernel_display_name", "null"), ("kernel_display_name", '""'),
    ("python_version", "[3.10]"), ("python_version", "yes"),
    ("packages", "six"), ("packages", "{six: 1}"), ("packages", "null"),
    ("index_url", "[https://x]"), ("index_url", "42"),
    ("extra_index_urls", "https://x"), ("extra_index_urls", "[1, 2]"), ("extra_index_urls", '[""]'),
    ("description", "[x]"),
])
def test_wrong_types(tmp_path: Path, field: str, value: str) -> None:
    bad(tmp_path, spec_text(**{field: value}), field=field)


@pytest.mark.parametrize("value", ["[]", "[  ]"])
def test_empty_package_list(tmp_path: Path, value: str) -> None:
    bad(tmp_path, spec_text(packages=value), field="packages", contains="at least one")


@pytest.mark.parametrize("entry", ["42", "null", '""', "[six]"])
def test_package_entry_not_a_string(tmp_path: Path, entry: str) -> None:
    bad(tmp_path, spec_text(packages=f"[six, {entry}]"), field="packages", contains="entry 2")


@pytest.mark.parametrize("entry", ["six===", "numpy>=>1", "./local/pkg", "C:\\\\wheels\\\\x.whl", "six # comment",
                                   "pkg==1.0 --hash=sha256:abc", "-e .", "--index-url=https://evil.example/simple",
                                   "-r requirements.txt", "--extra-index-url https://x"])
def test_package_entry_not_pep508(tmp_path: Path, entry: str) -> None:
    message = bad(tmp_path, spec_text(packages=f'["six", "{entry}"]'), field="packages", contains="entry 2")
    if entry.startswith("-"):
        assert "installer option" in message


# ------------------------------------------------------------------------------------------- venv_name


@pytest.mark.parametrize("name", ["../x", "..", ".", "C:\\\\x", "C:x", "a/b", "a\\\\b", "/abs", "CON", "con",
                                  "nul.txt", "Com1", "LPT9.log", "aux.tar.gz", "name.", "has space", "-dash",
                                  ".hidden", "x" * 65, "ñandú", "a:b", "a*b"])
def test_venv_name_not_a_plain_folder_name(tmp_path: Path, name: str) -> None:
    bad(tmp_path, spec_text(venv_name=f'"{name}"'), field="venv_name")


@pytest.mark.parametrize("name", ["ml-ingest", "ml_ingest.py310", "A1", "console", "nul_data", "com10"])
def test_venv_name_plain_ok(tmp_path: Path, name: str) -> None:
    assert load_spec(write(tmp_path, spec_text(venv_name=name))).venv_name == name


# -------------------------------------------------------------------------------------- python_version


@pytest.mark.parametrize("value", ['"three"', '"3"', '"3.x"', '"2.7"', '"3.8.10.1"', '"latest"', '">=3.10,<"',
                                   '"py3.10"', '"3.10 or 3.11"'])
def test_python_version_invalid(tmp_path: Path, value: str) -> None:
    bad(tmp_path, spec_text(python_version=value), field="python_version", contains="PEP 440")


@pytest.mark.parametrize(("value", "number"), [("3.10", "3.1"), ("3.8", "3.8"), ("3", "3")])
def test_python_version_unquoted_number(tmp_path: Path, value: str, number: str) -> None:
    message = bad(tmp_path, spec_text(python_version=value), field="python_version", contains="quoted")
    assert number in message


@pytest.mark.parametrize(("field", "value"), [
    ("index_url", '"https://user:s3cret@mirror.corp/simple"'), ("index_url", '"https://tok3n@mirror.corp/simple"'),
    ("extra_index_urls", '["https://pypi.org/simple", "https://u:s3cret@x.corp/simple"]'),
])
def test_index_url_with_credentials_is_refused(tmp_path: Path, field: str, value: str) -> None:
    message = bad(tmp_path, spec_text(**{field: value}), field=field, contains="PIP_INDEX_URL / UV_DEFAULT_INDEX")
    assert "s3cret" not in message and "tok3n" not in message and "***@" in message


def test_index_url_that_is_an_option_is_refused(tmp_path: Path) -> None:
    bad(tmp_path, spec_text(index_url='"--trusted-host=x"'), field="index_url")
    bad(tmp_path, spec_text(extra_index_urls='["https://a.example/simple https://b.example/simple"]'),
        field="extra_index_urls")


# ----------------------------------------------------------------------------------------- the CLI edge


def _main_loading(path: Path):
    return lambda argv: (load_spec(path), 0)[1]


def test_cli_edge_turns_bad_input_into_exit_2_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, spec_text(venv_name='"../x"'))
    assert cli.run(_main_loading(path), []) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(path) in lines[0] and "'venv_name'" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_cli_edge_success(tmp_path: Path) -> None:
    assert cli.run(_main_loading(write(tmp_path, spec_text())), []) == 0


def test_cli_edge_in_a_real_process(tmp_path: Path) -> None:
    path = write(tmp_path, spec_text(packages="[]"))
    code = ("import sys; from mlops_kit.core import cli; from mlops_kit.envs import spec; "
            "sys.exit(cli.run(lambda argv: (spec.load_spec(argv[0]), 0)[1]))")
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          cwd=scripts, timeout=60)
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.count("\n") == 1 and "'packages'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("text", ["3.7", "3.6.15"])
def test_python_older_than_38_is_refused(text: str) -> None:
    with pytest.raises(BadInput, match=r"field 'python_version': .*too old.*3\.8 or newer"):
        parse_python_request(text, lambda name, problem: BadInput(f"s.yaml: field '{name}': {problem}"))


def test_a_range_never_picks_a_python_older_than_38() -> None:
    request = parse_python_request(">=3.6")
    assert not request.accepts((3, 7, 16)) and request.accepts((3, 8, 18))


@pytest.mark.parametrize("name", ['" ml_ingest"', '"ml_ingest "', '"\tml_ingest"'])
def test_venv_name_with_stray_spaces_is_refused_not_changed(tmp_path: Path, name: str) -> None:
    bad(tmp_path, spec_text(venv_name=name), field="venv_name", contains="spaces")


@pytest.mark.parametrize("value", ['">=3.14,<3.12"', '">3.12.1,<3.12.2"', '"<3.8"', '"==3.7.*"'])
def test_a_python_range_nothing_satisfies_is_bad_input(tmp_path: Path, value: str) -> None:
    message = bad(tmp_path, spec_text(python_version=value), field="python_version")
    assert "no Python version satisfies it" in message and "install" not in message
