"""mlops_kit.rehearsal.gocd_xml: the config file read as GoCD's server reads it (its encoding, no DTD) and validated
against GoCD's own schema, every error one line with the file, line and column."""

from __future__ import annotations

import codecs
import hashlib
import time
from pathlib import Path

import pytest

from helpers_gocd import EXAMPLE, cruise_xml, parse_xml, position_of, py_task, refused, rehearse, stage_xml
from mlops_kit.core.errors import BadInput
from mlops_kit.rehearsal import gocd_reader, gocd_xml

_JOB = '<job name="a">'


def _with(marker: str, replacement: str) -> str:
    return cruise_xml(stage_xml("a", py_task("pass"))).replace(marker, replacement, 1)


def test_the_packaged_schema_is_gocds_own_for_schema_version_139() -> None:
    """The file GoCD's server validates against (Apache-2.0), byte for byte: a hand edit would silently change
    what the rehearsal accepts."""
    data = gocd_xml.SCHEMA_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == "ab205aa994d3adde9f67d6df99a85648a633e8689db52a138226c20c0aa9ef97"
    assert b'name="schemaVersion" type="xsd:int" use="required" fixed="139"' in data


def test_the_example_is_valid_against_gocds_schema() -> None:
    import xmlschema  # the library the rehearsal validates with, used here directly on the file

    xmlschema.XMLSchema(str(gocd_xml.SCHEMA_FILE)).validate(str(EXAMPLE))
    assert gocd_xml.read_config(EXAMPLE.read_bytes(), EXAMPLE).tag == "cruise"


@pytest.mark.parametrize("replacement, expected", [
    ('<job name="a" timout="1">', "<job>: unknown attribute 'timout' (did you mean timeout? allowed: name, "
                                  "runOnAllAgents, runInstanceCount, timeout, elasticProfileId)"),
    ('<job name="a" colour="red">', "<job>: unknown attribute 'colour' (allowed: name, runOnAllAgents, "
                                    "runInstanceCount, timeout, elasticProfileId)"),
])
def test_an_unknown_or_misspelt_job_attribute_is_refused_with_the_allowed_ones(replacement: str,
                                                                              expected: str) -> None:
    """``timout`` used to pass and silently mean "no timeout"."""
    xml = _with(_JOB, replacement)
    message = refused(xml, "<job ")
    assert expected in message and message.endswith("(GoCD's config schema, version 139)"), message


def test_an_unknown_stage_attribute_is_refused() -> None:
    xml = _with('<stage name="a">', '<stage name="a" fancy="yes">')
    assert "<stage>: unknown attribute 'fancy' (allowed: name, fetchMaterials, cleanWorkingDir, " \
           "artifactCleanupProhibited)" in refused(xml, "<stage ")


@pytest.mark.parametrize("marker, replacement, at, expected", [
    ("<tasks>", "<taskz /><tasks>", "<taskz", "unknown element <taskz> inside <job> (did you mean <tasks>? "
                                              "allowed: <environmentvariables>, <tasks>, <artifacts>, <resources>, "
                                              "<tabs>)"),
    ('<exec command="python">', '<exek command="python" /><exec command="python">', "<exek",
     "unknown element <exek> inside <tasks> (did you mean <exec>? allowed: <ant>, <exec>, <fetchartifact>, <nant>, "
     "<rake>, <task>)"),
    ("<materials>", "<stage name='x'><jobs><job name='x'/></jobs></stage><materials>", "<stage name='x'",
     "<stage>: out of place inside <pipeline>: the schema wants its children in this order: <params>, "
     "<trackingtool>, <timer>, <environmentvariables>, <dependencies>, <materials>, <stage>"),
    (_JOB, '<job name="a" timeout="soon">', "<job ", "attribute timeout='soon': not a number (xs:double)"),
    ('<stage name="a">', '<stage name="a" cleanWorkingDir="yes">', "<stage ",
     "attribute cleanWorkingDir='yes': not true or false (xs:boolean)"),
    (_JOB, '<job name="a/b">', "<job ", "attribute name='a/b': does not match the pattern of jobnameType: "
                                        "[a-zA-Z0-9_\\-.]+"),
    ("<arg>-c</arg>", '<runif status="sometimes" /><arg>-c</arg>', "<runif",
     "attribute status='sometimes': must be one of passed, failed, any"),
    ("<arg>-c</arg>", "<runif /><arg>-c</arg>", "<runif", "<runif>: missing required attribute 'status'"),
    ('schemaVersion="139"', 'schemaVersion="138"', "<cruise", "attribute 'schemaVersion' has a fixed value '139'"),
])
def test_schema_errors_name_the_element_where_it_is_and_what_is_wrong(marker: str, replacement: str, at: str,
                                                                      expected: str) -> None:
    assert expected in refused(_with(marker, replacement), at)


def test_a_long_value_is_shortened_in_the_message() -> None:
    message = refused(cruise_xml(stage_xml("a", py_task("pass")), name="p" * 256), "<pipeline ")
    assert "attribute name='" + "p" * 56 + "...': value length cannot be greater than 255" in message
    assert len(message) < 250


@pytest.mark.parametrize("replacement", ['<job name="a" timout="1">', '<job name="a" colour="red">'])
def test_dry_run_refuses_a_misspelt_attribute_before_anything_runs(tmp_path: Path, replacement: str) -> None:
    """The end-to-end case: exit 2 in --dry-run, one line, the file, line and column; nothing created."""
    xml = _with(_JOB, replacement)
    done = rehearse(tmp_path, xml, "--dry-run")
    line, column = position_of(xml, "<job ")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: {tmp_path / 'my repo' / 'cfg.xml'}: line {line}, column {column}: <job>:")
    assert done.stderr.count("\n") == 1 and not done.stdout
    assert not (tmp_path / "my repo" / ".pipeline").exists()


def _encoded(encoding: str, declared: str | None, *, bom: bool = False) -> bytes:
    value = '<environmentvariables><variable name="GREETING"><value>café crème</value></variable>' \
            "</environmentvariables>"
    xml = cruise_xml(stage_xml("a", '<exec command="python"><arg>-c</arg><arg>print("señor")</arg></exec>'),
                     pipeline_extra=value)
    if declared is None:
        xml = xml.replace('<?xml version="1.0" encoding="utf-8"?>\n', "")
    else:
        xml = xml.replace('encoding="utf-8"', f'encoding="{declared}"')
    data = xml.encode(encoding)
    return codecs.BOM_UTF16_LE + data if bom else data


@pytest.mark.parametrize("data", [
    _encoded("iso-8859-1", "ISO-8859-1"),
    _encoded("utf-16-le", "UTF-16", bom=True),
    _encoded("cp1252", "windows-1252"),
    codecs.BOM_UTF8 + _encoded("utf-8", "utf-8"),
    _encoded("utf-8", None),
], ids=["iso-8859-1", "utf-16-bom", "windows-1252", "utf-8-bom", "utf-8-undeclared"])
def test_the_file_is_decoded_as_its_xml_declaration_says(tmp_path: Path, data: bytes) -> None:
    """Valid for GoCD, they used to fail with "'utf-8' codec can't decode"."""
    path = tmp_path / "cfg.xml"
    path.write_bytes(data)
    (pipeline,) = gocd_reader.load_config(path)
    assert [(v.name, v.value) for v in pipeline.variables] == [("GREETING", "café crème")]
    assert pipeline.stages[0].jobs[0].tasks[0].args == ("-c", 'print("señor")')


def test_a_latin_1_config_rehearses_with_its_values_intact(tmp_path: Path) -> None:
    """End to end: the job gets the variable's value as the file meant it."""
    data = _encoded("iso-8859-1", "ISO-8859-1").replace(
        b'print("se\xf1or")', b"import os; print(os.environ['GREETING'].encode().hex())")
    done = rehearse(tmp_path, data)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "café crème".encode().hex() in done.stdout


@pytest.mark.parametrize("data, expected", [
    (_encoded("iso-8859-1", None), "line 4, column"),  # Latin-1 bytes in a file that says nothing: not UTF-8
    (_encoded("utf-8", "klingon"), "line 1, column"),
])
def test_bytes_that_do_not_decode_are_one_line(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "cfg.xml"
    path.write_bytes(data)
    with pytest.raises(BadInput) as info:
        gocd_reader.load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {expected}") and "invalid XML" in message and "\n" not in message, message


_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE cruise [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
""" + "".join(f' <!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9)) + """]>
<cruise><pipelines><pipeline name="p"><environmentvariables><variable name="X"><value>&j;</value></variable>
</environmentvariables></pipeline></pipelines></cruise>
"""
_EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE cruise [ <!ENTITY secret SYSTEM "file:///etc/hostname"> ]>
<cruise><pipelines><pipeline name="p"><stage name="s"><jobs><job name="j"><tasks><exec command="echo">
<arg>&secret;</arg></exec></tasks></job></jobs></stage></pipeline></pipelines></cruise>
"""


@pytest.mark.parametrize("text", [_LAUGHS, _EXTERNAL], ids=["billion-laughs", "external-entity"])
def test_a_dtd_is_refused_at_once(text: str, tmp_path: Path) -> None:
    """A 'billion laughs' document hung the reader; an external entity became an empty argument. Refused in well
    under a second: timed against reading the (much larger) example config, as a ratio."""
    path = tmp_path / "evil.xml"
    path.write_text(text, encoding="utf-8")
    began = time.perf_counter()
    with pytest.raises(BadInput) as info:
        gocd_reader.load_config(path)
    refused_in = time.perf_counter() - began
    began = time.perf_counter()
    gocd_reader.load_config(EXAMPLE)
    example = time.perf_counter() - began
    assert str(info.value) == (f"{path}: line 2: <!DOCTYPE cruise>: a DTD (with its entity declarations) "
                               "is not allowed in a GoCD config; remove it")
    assert refused_in < max(20 * example, 0.5), (refused_in, example)


def test_bad_files_are_one_line_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        gocd_reader.load_config(tmp_path / "missing.xml")
    with pytest.raises(BadInput, match="is a folder"):
        gocd_reader.load_config(tmp_path)
    broken = tmp_path / "broken.xml"
    broken.write_text("<cruise>\n<pipelines>\n</cruise>\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"broken.xml: line 3, column 3: invalid XML: mismatched tag$"):
        gocd_reader.load_config(broken)


def test_every_element_knows_its_line_and_column() -> None:
    xml = cruise_xml(stage_xml("a", py_task("pass")))
    root = gocd_xml.parse(xml, Path("cfg.xml"))
    job = next(e for e in root.iter() if e.tag == "job")
    assert isinstance(job, gocd_xml.Element) and (job.line, job.column) == position_of(xml, "<job ")


def test_the_schema_is_parsed_once_per_process() -> None:
    assert gocd_xml.gocd_schema() is gocd_xml.gocd_schema()
    assert parse_xml(cruise_xml(stage_xml("a", py_task("pass")))).name == "demo"
