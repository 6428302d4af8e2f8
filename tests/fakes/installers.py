"""Fake Python installers (install manager, winget, pyenv, pyenv-win, choco) that run for real on Linux.

Each is an executable Python script named like the real tool. It records its argv (one JSON list per call) to a log
file so tests can assert the exact command line, then "installs" by symlinking the interpreter into the folder the
real tool uses, pointing at a real pyenv Python, so discovery and verification run unchanged afterwards:

* install manager (``pymanager install [--yes] <tag>``; source ``src/manage/commands.py``): tags match by prefix,
  install into ``%LOCALAPPDATA%\\Python\\pythoncore-3.X-64\\python.exe``; the ``py`` it ships answers ``-0p`` in
  its legacy format (``list_command.format_legacy``: ``" -V:<tag>".ljust(17)`` then the executable).
* winget (``winget install --id Python.Python.3.X --exact ... [--version V]``): the python.org per-user installer
  puts ``%LOCALAPPDATA%\\Programs\\Python\\Python3X\\python.exe``; no match prints "No package found matching input
  criteria." and exits APPINSTALLER_CLI_ERROR_NO_APPLICATIONS_FOUND 0x8A150014, which a POSIX exit status can only
  carry as its low byte (0x14 = 20).
* pyenv (``pyenv install --list`` / ``pyenv install -s V``): ``$PYENV_ROOT/versions/V/bin/python``;
  unknown version: "python-build: definition not found: V", exit 2.
* pyenv-win (``pyenv install --list`` / ``pyenv install --quiet V``, ``libexec/pyenv-install.vbs``): prints the
  ``:: [Info] ::  Mirror:`` line first, installs into ``<pyenv-win>\\versions\\V\\python.exe`` (the folder above
  ``bin``); unknown version: "pyenv-install: definition not found: V", exit 1. A failed installer run only prints
  ":: [Error] :: couldn't install .. V" and still exits 0 (``broken=True`` reproduces that).
* choco (``choco install python3XY --yes --no-progress [--version V]``): ``%SystemDrive%\\Python3XY\\python.exe``.

``fail=N`` makes any install exit ``N`` after printing a tool-like failure line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

_SCRIPT = r'''#!{python}
"""Fake {kind} (see tests/fakes/installers.py)."""
import json, os, sys
from pathlib import Path

KIND = {kind!r}
CATALOG = {catalog!r}  # "3.X.Y" -> real interpreter
LOG = {log!r}
FAIL = {fail!r}
BROKEN = {broken!r}
HERE = Path(__file__).resolve().parent


def log():
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps([Path(sys.argv[0]).name] + sys.argv[1:]) + "\n")


def newest(prefix):
    found = [v for v in CATALOG if v == prefix or v.startswith(prefix + ".")]
    return max(found, key=lambda v: tuple(map(int, v.split(".")))) if found else None


def link(path, version):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.symlink_to(CATALOG[version])
    print("Installed Python " + version + " to " + str(path.parent))


def failed(line):
    print(line)
    sys.exit(FAIL)


def pymanager(args):
    if args[:1] in (["-0p"], ["--list-paths"]):
        root = Path(os.environ["LOCALAPPDATA"]) / "Python"
        for exe in sorted(root.glob("pythoncore-*/python.exe")):
            tag = exe.parent.name[len("pythoncore-"):].replace("-64", "[-64]")
            print(" -V:" + tag.ljust(13), str(exe))
        return 0
    if args[:1] != ["install"] or "--yes" not in args:
        print("[ERROR] fake pymanager: expected 'install --yes <TAG>'", file=sys.stderr)
        return 1
    tag = [a for a in args[1:] if not a.startswith("-")][0]
    version = newest(tag)
    if FAIL is not None or version is None:
        failed("[ERROR] Failed to find a suitable install for '" + tag + "'.")
    minor = ".".join(version.split(".")[:2])
    print("Installing Python " + version + ".")
    link(Path(os.environ["LOCALAPPDATA"]) / "Python" / ("pythoncore-" + minor + "-64") / "python.exe", version)
    return 0


def winget(args):
    ident = args[args.index("--id") + 1]
    wanted = args[args.index("--version") + 1] if "--version" in args else None
    minor = ident[len("Python.Python."):]
    version = wanted if wanted in CATALOG else (None if wanted else newest(minor))
    if FAIL is not None:
        failed("Installer failed with exit code: 1603")
    if not ident.startswith("Python.Python.") or version is None or not version.startswith(minor + "."):
        print("No package found matching input criteria.")
        return 0x8A150014 & 0xFF
    print("Found Python " + minor + " [" + ident + "] Version " + version)
    link(Path(os.environ["LOCALAPPDATA"]) / "Programs" / "Python" / ("Python" + minor.replace(".", "")) / "python.exe",
         version)
    print("Successfully installed")
    return 0


def pyenv(args):
    windows = KIND == "pyenv-win"
    if windows:
        print(":: [Info] ::  Mirror: https://www.python.org/ftp/python")
    if args[:2] in (["install", "--list"], ["install", "-l"]):
        if not windows:
            print("Available versions:")
        for v in sorted(CATALOG, key=lambda v: tuple(map(int, v.split(".")))):
            print(("" if windows else "  ") + v)
            print(("" if windows else "  ") + v + ("-win32" if windows else "t"))
        print(("" if windows else "  ") + "3.14-dev")
        return 0
    version = args[-1]
    if version not in CATALOG:
        print(("pyenv-install" if windows else "python-build") + ": definition not found: " + version)
        return 1 if windows else 2
    if FAIL is not None:
        failed(":: [Error] :: couldn't install .. " + version if windows else "BUILD FAILED (fake using python-build)")
    if BROKEN:
        print(":: [Error] :: couldn't install .. " + version)
        return 0
    if windows:
        link(HERE.parent / "versions" / version / "python.exe", version)
    else:
        link(Path(os.environ["PYENV_ROOT"]) / "versions" / version / "bin" / "python", version)
    return 0


def choco(args):
    package = args[1]
    minor = "3." + package[len("python3"):]
    wanted = args[args.index("--version") + 1] if "--version" in args else None
    version = wanted if wanted in CATALOG else (None if wanted else newest(minor))
    if FAIL is not None or version is None:
        failed("Chocolatey installed 0/1 packages. 1 packages failed.")
    link(Path(os.environ["SystemDrive"] + os.sep) / ("Python" + minor.replace(".", "")) / "python.exe", version)
    print("Chocolatey installed 1/1 packages.")
    return 0


log()
sys.exit({{"pymanager": pymanager, "winget": winget, "pyenv": pyenv, "pyenv-win": pyenv, "choco": choco}}[KIND](
    sys.argv[1:]))
'''

_NAMES = {"pymanager": ("pymanager", "py"), "winget": ("winget",), "pyenv": ("pyenv",), "pyenv-win": ("pyenv",),
          "choco": ("choco",)}


def version_of(python: Path) -> str:
    """``3.10.13`` for a pyenv interpreter ``.../versions/3.10.13/bin/python``."""
    return python.parent.parent.name


def catalog_of(pythons: dict[str, Path]) -> dict[str, str]:
    """What the fake installers can "download": the real pyenv interpreters, by full version."""
    return {version_of(path): os.fspath(path) for path in pythons.values()}


def make_installer(kind: str, bindir: Path, catalog: dict[str, str], log: Path, *, fail: int | None = None,
                   broken: bool = False) -> Path:
    """Write the fake ``kind`` tool(s) into ``bindir``; returns the main executable."""
    text = _SCRIPT.format(python=sys.executable, kind=kind, catalog=catalog, log=os.fspath(log), fail=fail,
                          broken=broken)
    bindir.mkdir(parents=True, exist_ok=True)
    for name in _NAMES[kind]:
        (bindir / name).write_text(text, encoding="utf-8")
        (bindir / name).chmod(0o755)
    return bindir / _NAMES[kind][0]


def calls(log: Path) -> list[list[str]]:
    """Every recorded command line, in order (tool name first)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
