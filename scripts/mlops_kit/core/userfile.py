"""Reading a file the user named (spec, params, freeze, GoCD config, manifest): every failure is one line that
names the file and says what it was expected to be, never a traceback."""

from __future__ import annotations

from pathlib import Path

from .errors import BadInput


def read_input(path: Path | str, what: str) -> str:
    """Text of ``path`` (a UTF-8 BOM from Notepad is dropped); :class:`BadInput` naming ``what`` otherwise."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: cannot read {what} ({exc})") from None
    except OSError as exc:
        raise _unreadable(path, what, exc) from None


def read_input_bytes(path: Path | str, what: str) -> bytes:
    """Bytes of ``path``, for a format that says its own encoding (an XML declaration); :class:`BadInput` naming
    ``what`` otherwise."""
    path = Path(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, what, exc) from None


def _unreadable(path: Path, what: str, exc: OSError) -> BadInput:
    if isinstance(exc, FileNotFoundError):
        return BadInput(f"{path}: {what} not found")
    if isinstance(exc, IsADirectoryError):
        return BadInput(f"{path}: {what} is a folder, expected a file")
    return BadInput(f"{path}: cannot read {what} ({exc})")
