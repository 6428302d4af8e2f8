"""The stage lock file format (mlops_kit.envs.lockfile): parsing, malformed lines, the header, freshness, markers.

Hand-written locks (fake hashes, no network); the example specs' committed locks are checked in test_create_venv.py.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

import pytest
from helpers_locks import FAKE, fake_lock, pin, write_spec

from mlops_kit.core.errors import BadInput
from mlops_kit.envs import lockfile
from mlops_kit.envs.spec import load_spec


def test_lock_path_and_the_spec_it_belongs_to() -> None:
    assert lockfile.lock_path(Path("specs/train.yaml")) == Path("specs/train.lock.txt")
    assert lockfile.spec_path_for(Path("specs/train.lock.txt")) == Path("specs/train.yaml")


def test_a_lock_parses_into_pins_with_hashes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("six", "1.17.0") + pin("colorama", "0.4.6", "sys_platform == 'win32'", 1))
    lock = lockfile.read_lock(path)
    assert [(p.name, p.version, p.marker, len(p.hashes)) for p in lock.pins] == [
        ("six", "1.17.0", None, 2), ("colorama", "0.4.6", "sys_platform == 'win32'", 1)]
    assert lock.spec_hash == spec.content_hash() and lock.python == "3.12" and len(lock.sha256) == 64
    assert lock.pins[1].line == lock.pins[0].line + 4


@pytest.mark.parametrize("bad, problem", [
    ("<<<<<<< HEAD\n", "expected 'name==version"),
    ("six>=1.16 \\\n    --hash=sha256:" + FAKE + "\n", "expected 'name==version"),
    ("--index-url https://pypi.org/simple\n", "expected 'name==version"),
    ("six==1.17.0\n", "no --hash follows"),
    ("six==1.17.0 \\\n    --hash=sha256:abc\n", "continuation line"),
    ("six==1.17.0 ; sys_platform = 'win32' \\\n    --hash=sha256:" + FAKE + "\n", "Expected"),
    ("six==1.17.0 \\\n    --hash=sha256:" + FAKE + " \\\n", "cut off"),
])
def test_a_malformed_line_is_bad_input_naming_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("attrs", "25.1.0") + bad)
    with pytest.raises(BadInput) as info:
        lockfile.read_lock(path)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert f"{path}: line " in message and problem in message, message
    line = int(message.split(": line ")[1].split(":")[0])
    assert path.read_text().splitlines()[line - 1].strip()[:10] in message  # the line it names is the bad one


def test_a_missing_header_field_or_an_unknown_format_is_bad_input(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    with pytest.raises(BadInput, match=r"header field 'spec-hash' missing.*--spec .*stage\.yaml --lock"):
        lockfile.read_lock(fake_lock(spec, pin("six", "1.17.0"), **{"spec-hash": ""}))
    with pytest.raises(BadInput, match="lock format '9'"):
        lockfile.read_lock(fake_lock(spec, pin("six", "1.17.0"), **{"lock-format": "9"}))
    with pytest.raises(BadInput, match="pins no packages"):
        lockfile.read_lock(fake_lock(spec, ""))


def test_a_stale_or_missing_lock_is_one_line_naming_spec_lock_and_command(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    lock = lockfile.lock_path(spec.source)
    command = f"python scripts/create_venv.py --spec {spec.source.as_posix()} --lock"
    with pytest.raises(BadInput) as info:
        lockfile.check_fresh(spec)
    assert str(info.value) == f"{spec.source}: no lock {lock}; create it with: {command}"
    fake_lock(spec, pin("six", "1.17.0"))
    assert lockfile.check_fresh(spec).path == lock
    changed = write_spec(tmp_path, "stage", "3.12", ["six", "attrs"])
    with pytest.raises(BadInput) as info:
        lockfile.check_fresh(changed)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert message.startswith(f"{spec.source}: stale lock {lock} (packages or index settings changed")
    assert message.endswith(f"refresh it with: {command}")
    with pytest.raises(BadInput, match=r"python_version changed from '3\.12' to '3\.11'"):
        lockfile.check_fresh(write_spec(tmp_path, "stage", "3.11", ["six", "attrs"]))


def test_check_fresh_takes_milliseconds_on_a_full_size_lock(tmp_path: Path) -> None:
    """A lock the size of the train stage's (about 50 pins, 1,200 lines): a generous ceiling, not a tight bound."""
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    body = "".join(pin(f"pkg{i}", f"1.{i}.0", "sys_platform == 'win32'" if i % 7 == 0 else "", hashes=22)
                   for i in range(50))
    fake_lock(spec, body)
    assert len(lockfile.lock_path(spec.source).read_text().splitlines()) > 1200
    times = []
    for _ in range(20):
        started = time.perf_counter()
        lockfile.check_fresh(load_spec(spec.source))  # the spec's own parse included, as --check-lock does it
        times.append(time.perf_counter() - started)
    print(f"check_fresh: median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert statistics.median(times) < 0.1 and max(times) < 0.5


def test_pins_follow_the_markers_of_the_given_environment(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", ">=3.10,<3.13", ["ipykernel"])
    body = (pin("colorama", "0.4.6", "sys_platform == 'win32'") + pin("appnope", "1.0.0", "sys_platform == 'darwin'")
            + pin("ipykernel", "7.3.0", "python_full_version < '3.11'")
            + pin("ipykernel", "7.4.0", "python_full_version >= '3.11'") + pin("six", "1.17.0"))
    lock = lockfile.read_lock(fake_lock(spec, body, python="3.10"))
    windows_310 = {"sys_platform": "win32", "python_full_version": "3.10.11", "python_version": "3.10"}
    linux_312 = {"sys_platform": "linux", "python_full_version": "3.12.1", "python_version": "3.12"}
    assert lockfile.pins_for_this_platform(lock, windows_310) == {"colorama": "0.4.6", "ipykernel": "7.3.0",
                                                               "six": "1.17.0"}
    assert lockfile.pins_for_this_platform(lock, linux_312) == {"ipykernel": "7.4.0", "six": "1.17.0"}
    overlapping = lockfile.read_lock(fake_lock(spec, pin("six", "1.16.0") + pin("six", "1.17.0")), whole=False)
    with pytest.raises(BadInput, match="six is pinned twice for linux / Python 3.12.1"):
        lockfile.pins_for_this_platform(overlapping, linux_312)


@pytest.mark.parametrize(("markers", "where"), [
    (("", ""), "windows / Python 3.10"),
    (("os_name == 'nt'", "sys_platform == 'win32'"), "windows / Python 3.10"),
    (("sys_platform == 'darwin'", "platform_machine == 'arm64'"), "macos / Python 3.10"),
    (("python_full_version < '3.13'", "python_full_version >= '3.12' and sys_platform == 'linux'"),
     "linux / Python 3.12"),
    (("python_full_version < '3.14'", "python_full_version >= '3.14'"), None),
    (("sys_platform == 'win32'", "sys_platform != 'win32'"), None),
])
def test_a_package_pinned_twice_for_any_platform_and_python_the_lock_serves_is_refused_when_read(
        tmp_path: Path, markers: tuple[str, str], where: str | None) -> None:
    """What a build on that agent would refuse, --check-lock refuses on any machine: Windows, Linux and macOS
    (uv's targets), each Python from the lock's minor to the newest known."""
    spec = write_spec(tmp_path, "stage", "3.10", ["six"])
    path = fake_lock(spec, pin("attrs", "25.1.0") + pin("six", "1.16.0", markers[0]) + pin("six", "1.17.0", markers[1]),
                     python="3.10")
    if where is None:
        assert len(lockfile.read_lock(path).pins) == 3
        return
    with pytest.raises(BadInput) as info:
        lockfile.read_lock(path)
    lines = path.read_text().splitlines()
    first, second = [n for n, line in enumerate(lines, 1) if line.startswith("six==")]
    assert str(info.value) == (f"{path}: line {second}: six is pinned twice for {where} (lines {first} and {second}); "
                               f"re-lock with: {lockfile.refresh_command(spec.source)}")


# ---------------------------------------------------------------------------------------------------- the seal


def edited(path: Path, old: str, new: str) -> Path:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def line_of(path: Path, start: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(start))


def test_a_sealed_lock_reads_back_and_sealing_again_changes_nothing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("six", "1.17.0") + pin("attrs", "25.1.0") + pin("packaging", "24.2"))
    text = path.read_text(encoding="utf-8")
    assert lockfile.seal(text) == text and lockfile.seal(lockfile.seal(text)) == text
    header = text.split("\n\n")[0].splitlines()
    seal_lines = [line for line in header if line.startswith(("# digest: ", "# blocks: "))]
    assert header[-len(seal_lines):] == seal_lines and seal_lines[0].startswith("# digest: sha256:")
    tokens = " ".join(line[len("# blocks: "):] for line in seal_lines[1:]).split()
    assert len(tokens) == len(header) - len(seal_lines) + 1 + 3  # each header line, the blank line, each pin
    assert [t.split(":")[0] for t in tokens[-3:]] == ["six", "attrs", "packaging"]
    assert all(len(line) <= 118 for line in seal_lines)
    lock = lockfile.read_lock(path)
    assert "digest" not in lock.header and "blocks" not in lock.header and len(lock.pins) == 3


def test_line_endings_are_not_an_edit_a_windows_checkout_reads_the_same(tmp_path: Path) -> None:
    """git on Windows (core.autocrlf=true) checks text files out with CRLF; an editor may drop the last newline."""
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("six", "1.17.0"))
    pins = lockfile.read_lock(path).pins
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert lockfile.read_lock(path).pins == pins
    path.write_bytes(path.read_bytes().rstrip(b"\r\n"))
    assert lockfile.read_lock(path).pins == pins


@pytest.mark.parametrize(("edit", "names", "says"), [
    (lambda p: edited(p, "six==1.17.0 \\", "six==1.16.0 \\"), "six==", " (six==1.16.0): differs from what was locked"),
    (lambda p: edited(p, "    --hash=sha256:" + "0" * 63 + "1", "    --hash=sha256:" + "f" * 64), "six==",
     " (six==1.17.0): differs from what was locked"),
    (lambda p: edited(p, "# via -r spec.yaml\nattrs", "# via -r spec.yaml\n# reviewed by bob\nattrs"), "# reviewed",
     " (# reviewed by bob): added"),
    (lambda p: edited(p, "attrs==25.1.0 \\\n    --hash=sha256:" + "0" * 64 + " \\\n    --hash=sha256:" + "0" * 63
                      + "1\n    # via -r spec.yaml\n", ""), "packaging==", ": the block of attrs was removed here"),
    (lambda p: edited(p, "# python: 3.12", "# python: 3.11"), "# python: ", " (# python: 3.11): differs"),
    (lambda p: edited(p, "# python-request: 3.12\n", ""), "# added: ", ": 1 line was removed here"),
    (lambda p: edited(p, "\n\nsix==", "\nsix=="), "six==", ": 1 line was removed here"),
    (lambda p: p.write_text(p.read_text() + "pip==25.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"), None,
     " (pip==25.0): added"),
    (lambda p: p.write_text(p.read_text().split("packaging==")[0]), None,
     ": the block of packaging was removed from the end"),
    (lambda p: edited(p, "# digest: sha256:", "# digest: sha256:0"), "# digest: ", ": the seal itself differs"),
    (lambda p: edited(p, "# blocks: ", "# blocks: 01234567 "), "# digest: ", ": the seal itself differs"),
])
def test_a_hand_edit_anywhere_is_refused_naming_the_first_edited_line(tmp_path: Path, edit, names: str | None,
                                                                      says: str) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("six", "1.17.0") + pin("attrs", "25.1.0") + pin("packaging", "24.2"))
    edit(path)
    number = line_of(path, names) if names else len(path.read_text().splitlines()) + (0 if "added" in says else 1)
    if names is None and "added" in says:
        number = line_of(path, "pip==")
    with pytest.raises(BadInput) as info:
        lockfile.read_lock(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line {number}{says}"), message
    assert message.endswith("the lock was edited by hand (its digest no longer matches) and is refused whole: "
                            f"restore it from git or re-lock with: {lockfile.refresh_command(spec.source)}")
    assert info.value.exit_code == 2 and "\n" not in message


def test_a_lock_without_its_seal_or_with_two_digests_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("six", "1.17.0"))
    sealed = path.read_text()
    path.write_text("".join(line for line in sealed.splitlines(keepends=True) if not line.startswith("# blocks:")))
    with pytest.raises(BadInput, match=r"its seal \(one '# digest:' line .* is missing or repeated"):
        lockfile.read_lock(path)
    path.write_text(sealed.replace("# blocks:", "# digest: sha256:00\n# blocks:"))
    with pytest.raises(BadInput, match="is missing or repeated"):
        lockfile.read_lock(path)


def test_an_older_or_newer_format_says_which_and_how_to_re_lock(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    command = lockfile.refresh_command(spec.source)
    path = fake_lock(spec, pin("six", "1.17.0"), **{"lock-format": "1"})
    with pytest.raises(BadInput) as info:
        lockfile.read_lock(path)
    assert str(info.value) == (f"{path}: lock format 1 was written by an older toolkit (before locks were sealed "
                               f"against hand edits); this one reads format 2: re-lock with: {command} (the pins "
                               "are kept)")
    with pytest.raises(BadInput, match=r"lock format '3' is not the format 2 .*newer toolkit"):
        lockfile.read_lock(fake_lock(spec, pin("six", "1.17.0"), **{"lock-format": "3"}))
    assert [p.name for p in lockfile.read_lock(path, whole=False).pins] == ["six"]  # what a re-lock keeps


def test_a_lock_a_run_recorded_in_the_older_format_is_sealed_for_its_replay_only_when_its_bytes_are_the_recorded_ones(
        tmp_path: Path) -> None:
    """Runs recorded before locks were sealed must still replay: their env.json holds the lock's sha256, which
    vouches for it as a seal would. The body and pins stay as recorded; any other lock is read (and refused) as is."""
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("six", "1.17.0") + pin("idna", "3.10"), **{"lock-format": "1"})
    old = "".join(line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                  if not line.startswith(("# digest:", "# blocks:"))).encode("utf-8")  # as format 1 wrote it
    recorded = hashlib.sha256(old).hexdigest()
    upgraded = lockfile.upgrade_recorded(old, recorded)
    assert upgraded is not None
    path.write_bytes(upgraded)
    lock = lockfile.read_lock(path)
    assert lock.header["lock-format"] == lockfile.LOCK_FORMAT
    assert [(p.name, p.version, p.hashes) for p in lock.pins] == [("six", "1.17.0", (f"{0:064x}", f"{1:064x}")),
                                                                 ("idna", "3.10", (f"{0:064x}", f"{1:064x}"))]
    body = old.decode().split("\n\n", 1)[1]
    assert upgraded.decode().endswith(body), "the body is the recorded one, byte for byte"
    assert lockfile.upgrade_recorded(old.replace(b"1.17.0", b"1.16.0"), recorded) is None, "not the recorded bytes"
    assert lockfile.upgrade_recorded(old, None) is None, "no record to vouch for it"
    assert lockfile.upgrade_recorded(upgraded, hashlib.sha256(upgraded).hexdigest()) is None, "already sealed"
