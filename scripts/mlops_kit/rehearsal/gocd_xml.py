"""A GoCD config file read as XML, as GoCD's server reads it: decoded as the file says, with no DTD, and validated
against GoCD's own schema before anything looks at its content.

* **Encoding**: the file is read as bytes and the XML parser decodes it as its declaration (or byte order mark)
  says: UTF-8 (the default), UTF-16 with a BOM, ``ISO-8859-1``, ``windows-1252``... as GoCD's Java parser does.
* **No DTD**: GoCD configs have none, and a DTD's entities let a small file hang a reader ("billion laughs") or pull
  in a local file; it is refused as soon as the parser meets ``<!DOCTYPE``, before any declaration in it is read.
* **GoCD's schema**: ``cruise-config.xsd`` (schemaVersion 139, Apache-2.0, shipped beside this module, identical to
  the one in GoCD's server) is what GoCD validates a config against when it loads it, before its own rules (those
  are :mod:`~mlops_kit.rehearsal.gocd_rules`). So whatever the schema refuses is refused here, the same way: an
  unknown or misspelt attribute (``<job timout="1">`` would otherwise silently mean "no timeout"), an element out of
  place, a name, path, number or boolean of the wrong shape. The first schema error is one line naming the file,
  the line and column, the element and what is wrong (for an unknown name: the names allowed there, and the close
  one when there is one). The validation is xmlschema's; the schema is parsed once per process (about 0.2 s).

Every element of the tree knows its line and column (1-based), for this module's messages and for the reader's.
"""

from __future__ import annotations

import difflib
import functools
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.parsers import expat

from ..core.errors import BadInput

if TYPE_CHECKING:
    import xmlschema

SCHEMA_FILE = Path(__file__).with_name("cruise-config.xsd")
SCHEMA_VERSION = "139"
_ATTRIBUTE_VALUE = re.compile(r"^attribute (?P<name>[^=\s]+)=(?P<value>'.*'|\".*\"):")
_TYPE_HINTS = {"xs:boolean": "true or false", "xs:double": "a number", "xs:int": "a whole number",
               "xs:long": "a whole number", "xs:integer": "a whole number", "xs:positiveInteger": "a whole number > 0"}


class Element(ET.Element):
    """An XML element that knows where it starts in its file (``sourceline`` is the name xmlschema reads)."""

    def __init__(self, tag: str, attrib: dict[str, str], line: int, column: int) -> None:
        super().__init__(tag, attrib)
        self.line = self.sourceline = line
        self.column = column

    def children(self, tag: str) -> list[Element]:
        return [child for child in self if child.tag == tag and isinstance(child, Element)]

    def child(self, tag: str) -> Element | None:
        found = self.children(tag)
        return found[0] if found else None

    @property
    def content(self) -> str:
        """The element's text ("" when it has none)."""
        return self.text or ""


def refusal(source: Path, tag: str, line: int, column: int, problem: str) -> BadInput:
    """The one-line error every check of a config raises: file, line, column, element, what is wrong."""
    return BadInput(f"{source}: line {line}, column {column}: <{tag}>: {problem}")


def read_config(data: bytes | str, source: Path) -> Element:
    """The root element of config ``data`` (bytes: decoded as the file declares), validated against GoCD's schema;
    :class:`BadInput` naming ``source``, the line and the column otherwise."""
    root = parse(data, source)
    validate(root, source)
    return root


def parse(data: bytes | str, source: Path) -> Element:
    """Parse with expat (standard library) so every element knows its line and column; refuse a DTD."""
    parser = expat.ParserCreate(namespace_separator="}")  # namespaced names as ElementTree spells them: {uri}name
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Element] = []
    root: list[Element] = []

    def doctype(name: str, *_: object) -> None:  # expat is past its start here: the line, not a column
        raise BadInput(f"{source}: line {parser.CurrentLineNumber}: <!DOCTYPE {name}>: a DTD (with its entity "
                       "declarations) is not allowed in a GoCD config; remove it")

    def start(tag: str, attrs: dict[str, str]) -> None:
        element = Element(_name(tag), {_name(k): v for k, v in attrs.items()}, parser.CurrentLineNumber,
                          parser.CurrentColumnNumber + 1)
        if stack:
            stack[-1].append(element)
        else:
            root.append(element)
        stack.append(element)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if not stack:
            return
        parent = stack[-1]
        if len(parent):
            parent[-1].tail = (parent[-1].tail or "") + data
        else:
            parent.text = (parent.text or "") + data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    parser.StartDoctypeDeclHandler = doctype  # before any declaration in it is read, so before any expansion
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise BadInput(f"{source}: line {exc.lineno}, column {exc.offset + 1}: invalid XML: "
                       f"{expat.ErrorString(exc.code)}") from None
    except (LookupError, ValueError) as exc:  # the declared encoding: unknown, or multi-byte beyond UTF-8/16
        raise BadInput(f"{source}: line 1, column 1: invalid XML: cannot decode the file as it declares ({exc}); "
                       "save it as UTF-8") from None
    return root[0]


def _name(expat_name: str) -> str:
    return "{" + expat_name if "}" in expat_name else expat_name


def validate(root: Element, source: Path) -> None:
    """Refuse the config at its first schema error, as GoCD does when it loads it."""
    error = next(iter(gocd_schema().iter_errors(root)), None)
    if error is None:
        return
    where = error.elem if isinstance(error.elem, Element) else root
    child = getattr(error, "invalid_child", None)
    if isinstance(child, Element):
        where = child
    raise refusal(source, where.tag, where.line, where.column,
                  f"{_explain(error, where)} (GoCD's config schema, version {SCHEMA_VERSION})")


@functools.cache
def gocd_schema() -> xmlschema.XMLSchema:
    """GoCD's XSD, parsed once per process (the import and the parse are what a dry run mostly costs)."""
    import xmlschema

    return xmlschema.XMLSchema(str(SCHEMA_FILE))


def _explain(error: Any, where: Element) -> str:
    """xmlschema's reason, reworded for the common mistakes: a name that does not exist (with the allowed ones and
    the close one), an element out of order, a value of the wrong type or shape."""
    from xmlschema.validators import XsdAtomicBuiltin, XsdAttributeGroup, XsdEnumerationFacets, XsdGroup

    reason = str(error.reason or error.message)
    validator = error.validator
    unknown = re.match(r"^'([^']+)' attribute not allowed", reason)
    if unknown and isinstance(validator, XsdAttributeGroup):
        return _unknown(f"attribute '{unknown.group(1)}'", unknown.group(1), [n for n in validator if n])
    if isinstance(validator, XsdGroup) and getattr(error, "invalid_tag", None):
        parent = error.elem.tag if error.elem is not None else "?"
        allowed = _element_names(validator)
        if where.tag not in allowed:
            return _unknown(f"element <{where.tag}> inside <{parent}>", where.tag, allowed, brackets=True)
        if validator.model == "sequence":
            return f"out of place inside <{parent}>: the schema wants its children in this order: " + ", ".join(
                f"<{name}>" for name in allowed)
        return f"not allowed here inside <{parent}> ({reason})"
    duplicate = re.match(r"^duplicated value \((.*),\) for XsdUnique\(name='(\w+)'\)", reason)
    if duplicate:
        return f"duplicate value {duplicate.group(1)}: the schema's {duplicate.group(2)} wants it unique"
    value = _ATTRIBUTE_VALUE.match(reason)
    if value is None:
        return reason
    written = value.group("value") if len(value.group("value")) <= 60 else value.group("value")[:57] + "...'"
    shown = f"attribute {value.group('name')}={written}"
    kind = getattr(getattr(validator, "parent", None), "prefixed_name", None) or getattr(validator, "prefixed_name",
                                                                                         None)
    if isinstance(validator, XsdEnumerationFacets):
        return f"{shown}: must be one of {', '.join(str(v) for v in validator.enumeration)}"
    if isinstance(validator, XsdAtomicBuiltin) or str(kind).startswith("xs:"):
        return f"{shown}: not {_TYPE_HINTS.get(str(kind), kind)} ({kind})"
    patterns = getattr(validator, "regexps", None)
    if patterns:
        return f"{shown}: does not match the pattern of {kind}: {' or '.join(patterns)}"
    return f"{shown}: {reason[value.end():].strip()}"


def _unknown(what: str, name: str, allowed: list[str], *, brackets: bool = False) -> str:
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    shown = [f"<{n}>" if brackets else n for n in allowed]
    hint = f"did you mean {shown[allowed.index(close[0])]}? " if close else ""
    return f"unknown {what} ({hint}allowed: {', '.join(shown) or 'none'})"


def _element_names(group: Any) -> list[str]:
    """The element names a content model accepts, members of a substitution group (GoCD's tasks) included."""
    names: list[str] = []
    for element in group.iter_elements():
        substitutes = sorted(element.iter_substitutes(), key=lambda e: e.local_name)
        members = [element, *substitutes]
        names += [m.local_name for m in members if not m.abstract and m.local_name not in names]
    return names
