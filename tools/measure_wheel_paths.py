"""Measure the longest path each locked package puts in a Windows venv, from its real Windows wheels on PyPI, and
write the table the path budget reads (scripts/mlops_kit/envs/wheel_paths.json).

For every pin a lock installs on Windows (at any Python the lock serves), every wheel of that version on PyPI that
the lock's hashes allow and that installs on Windows (platform tag win_amd64, win32, win_arm64 or any) is read:
only its zip's central directory, fetched with HTTP range requests (a few kB per wheel, not the wheel). Each member
is placed where an installer puts it in a Windows venv (mlops_kit.envs.pathbudget.in_venv) and the longest file
and folder are kept per pin. Pins already in the table are kept (--refresh measures them again).

    python tools/measure_wheel_paths.py                      # the example locks, specs/*.lock.txt
    python tools/measure_wheel_paths.py specs/train.lock.txt D:/my/specs/report.lock.txt
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from packaging.utils import parse_wheel_filename

from mlops_kit.envs import lockfile, pathbudget

WINDOWS_PLATFORMS = ("win_amd64", "win32", "win_arm64", "any")
_TIMEOUT = 60


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file through HTTP range requests (what zipfile needs to read the
    central directory at the end of a wheel)."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.position = url, size, 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={self.position}-{end - 1}"})
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            data = response.read()
            if response.status != 206:  # the server ignored the range: it sent the whole file
                data = data[self.position:end]
        self.position += len(data)
        return data


def windows_wheels(name: str, version: str, hashes: set[str]) -> list[dict]:
    """PyPI's files of ``name==version`` that install on Windows and whose sha256 the lock allows."""
    project = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(project, timeout=_TIMEOUT) as response:
        files = json.load(response)["releases"].get(version, [])
    out = []
    for file in files:
        if file["packagetype"] != "bdist_wheel" or file["digests"]["sha256"] not in hashes:
            continue
        tags = parse_wheel_filename(file["filename"])[3]
        if any(tag.platform in WINDOWS_PLATFORMS for tag in tags):
            out.append({**file, "url": urllib.parse.urljoin(project, file["url"])})  # a mirror may answer relative
    return out


def measure_pin(name: str, version: str, hashes: set[str]) -> dict[str, str] | None:
    """The longest file and folder of the pin's Windows wheels as installed in a Windows venv."""
    members: list[str] = []
    for wheel in windows_wheels(name, version, hashes):
        with zipfile.ZipFile(io.BufferedReader(RangeFile(wheel["url"], wheel["size"]), buffer_size=1 << 16)) as zf:
            members += [pathbudget.in_venv(info.filename) for info in zf.infolist() if not info.is_dir()]
    found = pathbudget.longest_of(members)
    return None if found is None else {"file": found.file, "folder": found.folder}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("locks", nargs="*", type=Path, help="lock files (default: specs/*.lock.txt)")
    parser.add_argument("--refresh", action="store_true", help="measure pins already in the table again")
    args = parser.parse_args(argv)
    locks = args.locks or sorted((ROOT / "specs").glob("*.lock.txt"))
    table_file = pathbudget.TABLE_FILE
    data = json.loads(table_file.read_text(encoding="utf-8")) if table_file.is_file() else {"pins": {}}
    pins = data["pins"]
    for lock_file in locks:
        lock = lockfile.read_lock(lock_file)
        wanted = pathbudget.windows_pins(lock)
        for pin in lock.pins:
            key = f"{pin.name}=={pin.version}"
            if key not in wanted or (key in pins and not args.refresh):
                continue
            measured = measure_pin(pin.name, pin.version, set(pin.hashes))
            if measured is None:
                print(f"{key}: no Windows wheel among the lock's files (an sdist only?): not measured")
                continue
            pins[key] = measured
            print(f"{key}: {len(measured['file'])} {measured['file']}")
    data = {"about": "longest path per locked package version in a Windows venv, from its Windows wheels "
                     "(tools/measure_wheel_paths.py); read by mlops_kit.envs.pathbudget",
            "measured_at": _dt.date.today().isoformat(), "pins": dict(sorted(pins.items()))}
    table_file.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    worst = max(pins.items(), key=lambda kv: len(kv[1]["file"]))
    print(f"{len(pins)} pins in {table_file}; longest: {worst[0]} {len(worst[1]['file'])} {worst[1]['file']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
