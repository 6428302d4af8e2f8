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
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: {what} is a folder, expected a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read {what} ({exc})") from None
