"""scripts/create_venv.py run as a user or a GoCD job would: exit codes, messages, kills and concurrent builders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers_locks import (
    IDNA_3_20,
    OLD_PACKAGING,
    append_to,
    copy_stage,
    drop_package,
    duplicate_package,
    error_lines,
    flip_hashes,
    reseal,
    write_spec,
)

from helpers import (
    NEW_PROCESS_GROUP,
    REPO_ROOT,
    SCRIPTS,
    TOOLKIT_PYTHON,
    failing_program,
    kernel_registered,
    kill_tree,
    run_script,
)
from mlops_kit.core import paths
from mlops_kit.envs import audit, build, lockfile
from mlops_kit.envs.spec import StageSpec

SPEC = """\
stage: ingest
python_version: "3.12"
venv_name: ingest-venv
packages:
  - six
  - packaging
kernel_display_name: "Ingest (test)"
"""


@pytest.fixture()
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "specs" / "ingest.yaml"
    path.parent.mkdir()
    path.write_text(SPEC, encoding="utf-8")
    return path


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    for needle in needles:
        assert needle in lines[0]


def test_help_explains_and_lists_exit_codes() -> None:
    done = run_script("create_venv.py", "--help")
    assert done.returncode == 0
    for needle in ("ML_VENV_ROOT", "PowerShell", "cmd", "--from-freeze", "--kernel-scope", "--lock", "--check-lock",
                   "specs/ --lock --build", "exit codes:", "--python-downloads", "UV_PYTHON_INSTALL_MIRROR",
                   "MLOPS_PYTHON_DOWNLOADS",
                   "4    environment build or install failed"):
        assert needle in done.stdout


@pytest.mark.parametrize(("args", "code", "needles"), [
    (["--spec", "{tmp}/missing.yaml"], 2, ["missing.yaml: spec file not found"]),
    (["--spec", "{spec}", "--installer", "conda"], 2, ["--installer", "invalid choice"]),
    (["--spec", "{spec}", "--kernel-scope", "global"], 2, ["--kernel-scope"]),
    (["--spec", "{spec}", "--bogus"], 2, ["unrecognized arguments: --bogus"]),
    (["--spec", "{spec}", "--from-freeze", "{tmp}/freeze.txt"], 2, ["freeze.txt: line 2:", "not pinned"]),
    (["--spec", "{spec}", "--python", "{not_python}"], 2, ["--python", "not-python"]),
    (["--spec", "{tmp}/typo.yaml"], 2, ["typo.yaml: field 'pakages'", "did you mean 'packages'"]),
    (["--spec", "{tmp}/py399.yaml"], 3, ["3.99"]),
    (["--spec", "{spec}", "--audit-dir", "{tmp}/freeze.txt"], 2, ["--audit-dir", "is not a folder"]),
    (["--spec", "{spec}", "--python", "{tmp}/no-exec-bit"], 2, ["--python", "no-exec-bit"]),
    (["--spec", "{tmp}/secret.yaml"], 2, ["field 'index_url'", "PIP_INDEX_URL"]),
    (["--spec", "{spec}", "--upgrade"], 2, ["--upgrade goes with --lock"]),
    (["--spec", "{spec}", "--build"], 2, ["--build goes with --lock"]),
    (["--spec", "{spec}", "--check-lock", "--lock"], 2, ["--check-lock only checks"]),
    (["--spec", "{spec}", "--lock", "--upgrade-package", "not a name!"], 2, ["'not a name!': not a package name"]),
    (["--spec", "{spec}", "--lock", "--from-freeze", "{tmp}/freeze.txt"], 2, ["--from-freeze and --lock"]),
    (["--spec", "{tmp}", "--python", "{tmp}/not-python"], 2, ["--python applies to one spec, 3 given"]),
    (["--spec", "{tmp}/empty"], 2, ["empty: a folder with no *.yaml stage specs"]),
])
def test_bad_input_one_line_no_traceback(tmp_path: Path, spec_file: Path, args: list[str], code: int,
                                         needles: list[str]) -> None:
    (tmp_path / "freeze.txt").write_text("six==1.16.0\ntomli\n")
    not_python = failing_program(tmp_path / "not-python")
    (tmp_path / "typo.yaml").write_text(SPEC.replace("packages:", "pakages:"))
    (tmp_path / "py399.yaml").write_text(SPEC.replace('"3.12"', '"3.99"'))
    (tmp_path / "no-exec-bit").write_text("not a program\n")
    (tmp_path / "secret.yaml").write_text(SPEC + "index_url: https://me:t0ken@mirror.corp/simple\n")
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, spec=spec_file, not_python=not_python) for a in args]
    done = run_script("create_venv.py", *argv, "--venv-root", str(tmp_path / "venvs"))
    assert_one_line_error(done, code, *needles)
    assert not (tmp_path / "venvs").exists()  # nothing created on bad input


def test_unrelated_folder_refused_and_untouched(tmp_path: Path, spec_file: Path) -> None:
    theirs = tmp_path / "venvs" / "ingest-venv"
    theirs.mkdir(parents=True)
    (theirs / "results.csv").write_text("keep me")
    done = run_script("create_venv.py", "--spec", str(spec_file), "--venv-root", str(tmp_path / "venvs"), "--force")
    assert_one_line_error(done, 2, str(theirs), "not created by create_venv.py")
    assert [p.name for p in theirs.iterdir()] == ["results.csv"]


@pytest.mark.slow
def test_build_then_reuse_with_spaces_env_root_and_audit_dir(tmp_path: Path, spec_file: Path,
                                                             isolated_home: Path) -> None:
    root = tmp_path / "ML venvs" / "with space"
    env = {**os.environ, "ML_VENV_ROOT": str(root)}
    audit = tmp_path / "artifacts" / "audit ingest"
    first = run_script("create_venv.py", "--spec", str(spec_file), "--audit-dir", str(audit), env=env)
    assert first.returncode == 0, first.stderr
    venv = root / "ingest-venv"
    assert first.stdout.splitlines()[-1] == str(venv)
    assert "building" in first.stderr and "Installed" in first.stderr  # uv's progress is streamed
    assert json.loads((audit / "env.json").read_text())["venv_path"] == str(venv)
    assert (isolated_home / "jupyter-data" / "kernels" / "ingest-venv" / "kernel.json").is_file()
    again = run_script("create_venv.py", "--spec", str(spec_file), env=env)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == str(venv)
    assert again.stderr.strip() == f"reusing {venv} (spec and interpreter unchanged)"
    quiet = run_script("create_venv.py", "--spec", str(spec_file), "--quiet", env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, f"{venv}\n", "")
    frozen = tmp_path / "pip_freeze.txt"  # rebuild exactly from the audit's freeze (as from a GoCD artifact)
    frozen.write_text((audit / "pip_freeze.txt").read_text())
    exact = run_script("create_venv.py", "--spec", str(spec_file), "--from-freeze", str(frozen), env=env)
    assert exact.returncode == 0, exact.stderr
    assert f"rebuilding {venv}: now built from the freeze file {frozen}" in exact.stderr
    assert (venv / "audit" / "pip_freeze.txt").read_text() == frozen.read_text()


@pytest.mark.slow
def test_killed_mid_install_is_rebuilt(tmp_path: Path, spec_file: Path) -> None:
    root = tmp_path / "venvs"
    venv = root / "ingest-venv"
    cmd = [str(TOOLKIT_PYTHON), str(SCRIPTS / "create_venv.py"), "--spec", str(spec_file), "--venv-root", str(root)]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **NEW_PROCESS_GROUP)
    deadline = time.monotonic() + 120
    while not (venv / build.MARKER).exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    kill_tree(child.pid)  # the whole job: create_venv.py and the uv it started
    child.wait(timeout=30)
    assert (venv / build.MARKER).exists() and not (venv / "audit" / "env.json").exists()
    done = run_script("create_venv.py", "--spec", str(spec_file), "--venv-root", str(root))
    assert done.returncode == 0, done.stderr
    assert f"rebuilding {venv}: a previous build did not finish (no audit/env.json)" in done.stderr
    record = audit.read_env(venv)
    assert build.health_check(venv, record) is None


@pytest.mark.slow
def test_four_concurrent_builders_one_builds_others_wait_and_reuse(tmp_path: Path, spec_file: Path) -> None:
    root = tmp_path / "venvs"
    cmd = [str(TOOLKIT_PYTHON), str(SCRIPTS / "create_venv.py"), "--spec", str(spec_file), "--venv-root", str(root)]
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [child.communicate(timeout=600) for child in children]
    assert [c.returncode for c in children] == [0, 0, 0, 0], [err for _, err in outputs]
    venv = root / "ingest-venv"
    assert all(out.splitlines()[-1] == str(venv) for out, _ in outputs)
    errs = [err for _, err in outputs]
    assert sum(f"building {venv}" in e for e in errs) == 1, errs
    assert sum(f"reusing {venv}" in e for e in errs) == 3, errs
    assert sum("waiting for another build of" in e for e in errs) >= 1, errs
    assert build.health_check(venv, audit.read_env(venv)) is None
    assert kernel_registered("ingest-venv")


@pytest.mark.slow
def test_three_concurrent_force_runs_rebuild_once(tmp_path: Path, spec_file: Path) -> None:
    """Waiters see env.json written after they started waiting and reuse it instead of rebuilding again.

    The test holds the build lock until all three wait on it, so the race is the worst case every time."""
    import threading

    import filelock

    root = tmp_path / "venvs"
    (root / ".locks").mkdir(parents=True)
    held = filelock.FileLock(str(root / ".locks" / "ingest-venv.lock"))
    held.acquire()
    cmd = [str(TOOLKIT_PYTHON), str(SCRIPTS / "create_venv.py"), "--spec", str(spec_file), "--venv-root", str(root),
           "--force", "--kernel-scope", "none"]
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errs: list[list[str]] = [[], [], []]
    readers = [threading.Thread(target=lambda c=c, e=e: e.extend(c.stderr))
               for c, e in zip(children, errs, strict=True)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 120
    while sum(any("waiting for another build" in line for line in e) for e in errs) < 3:
        assert time.monotonic() < deadline and all(c.poll() is None for c in children), errs
        time.sleep(0.05)
    held.release()
    for child, reader in zip(children, readers, strict=True):
        child.wait(timeout=600)
        reader.join()
    texts = ["".join(e) for e in errs]
    assert [c.returncode for c in children] == [0, 0, 0], texts
    venv = root / "ingest-venv"
    assert sum(f"building {venv}" in t or f"rebuilding {venv}" in t for t in texts) == 1, texts
    assert sum(f"reusing {venv} (another run just built it)" in t for t in texts) == 2, texts
    assert build.health_check(venv, audit.read_env(venv)) is None


@pytest.mark.slow
def test_venv_python_that_cannot_start_is_rebuilt_not_a_crash(tmp_path: Path, spec_file: Path) -> None:
    args = ["--spec", str(spec_file), "--venv-root", str(tmp_path / "venvs"), "--kernel-scope", "none"]
    assert run_script("create_venv.py", *args).returncode == 0
    python = paths.venv_python(tmp_path / "venvs" / "ingest-venv")
    python.unlink()
    python.write_text("not a program\n")  # no exec bit: PermissionError when started
    done = run_script("create_venv.py", *args)
    assert done.returncode == 0, done.stderr
    assert "health check failed: its interpreter" in done.stderr and "does not run" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_installer_failure_exit_4_then_fixed_spec_rebuilds(tmp_path: Path, spec_file: Path) -> None:
    spec_file.write_text(SPEC.replace("  - six\n", "  - six==0.0.0.1\n"))
    done = run_script("create_venv.py", "--spec", str(spec_file), "--venv-root", str(tmp_path / "venvs"))
    assert done.returncode == 4
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: installing packages with uv failed") and "marked incomplete" in last
    assert "Traceback" not in done.stderr and done.stdout == ""
    spec_file.write_text(SPEC)
    fixed = run_script("create_venv.py", "--spec", str(spec_file), "--venv-root", str(tmp_path / "venvs"),
                       "--kernel-scope", "none")
    assert fixed.returncode == 0, fixed.stderr
    assert "a previous build did not finish" in fixed.stderr


@pytest.mark.slow
def test_install_python_flag_installs_a_missing_python_then_builds(tmp_path: Path, spec_file: Path,
                                                                    pythons: dict[str, Path]) -> None:
    """--install-python with a fake pyenv (tests/fakes) and no Python visible; git absent, so the SHA is unknown."""
    from fakes.installers import calls, catalog_of, make_installer, version_of

    bindir, log = tmp_path / "bin", tmp_path / "installer-calls.jsonl"
    make_installer("pyenv", bindir, catalog_of(pythons), log)
    env = {**os.environ, "PATH": str(bindir), "PYENV_ROOT": str(tmp_path / "pyenv-root")}
    args = ["--spec", str(spec_file), "--venv-root", str(tmp_path / "venvs"), "--kernel-scope", "none"]
    missing = run_script("create_venv.py", *args, env=env)
    assert_one_line_error(missing, 3, "3.12")
    done = run_script("create_venv.py", *args, "--install-python", env=env)
    assert done.returncode == 0, done.stderr
    version = version_of(pythons["3.12"])
    assert ["pyenv", "install", "-s", version] in calls(log)
    record = audit.read_env(tmp_path / "venvs" / "ingest-venv")
    assert Path(record.python.path) == tmp_path / "pyenv-root" / "versions" / version / "bin" / "python"
    assert record.toolkit.git_sha == "unknown" and record.python.version == version


# ---------------------------------------------------------------------------------------------------- locks


def example_stage(folder: Path, name: str = "ingest") -> Path:
    """``specs/<name>.yaml`` and its committed lock copied into ``folder`` (edited there); returns the spec's copy."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in (REPO_ROOT / "specs" / f"{name}.yaml", lockfile.lock_path(REPO_ROOT / "specs" / f"{name}.yaml")):
        shutil.copyfile(source, folder / source.name)
    return folder / f"{name}.yaml"


def first_line(lock: Path, start: str) -> int:
    """The 1-based number of the first line of ``lock`` starting with ``start``."""
    return next(n for n, line in enumerate(lock.read_text(encoding="utf-8").splitlines(), 1) if line.startswith(start))


def as_old_format(lock: Path) -> None:
    """The lock as the toolkit wrote it before locks were sealed (format 1: no digest lines)."""
    lines = [line for line in lock.read_text(encoding="utf-8").splitlines(keepends=True)
             if not line.startswith(("# digest:", "# blocks:"))]
    lock.write_text("".join(lines).replace("# lock-format: 2\n", "# lock-format: 1\n"), encoding="utf-8")


HAND_EDITS = {  # how the lock is edited -> (the line the refusal names, what it says there)
    "a package block removed": (lambda lock: drop_package(lock, "tornado"),
                                lambda lock: first_line(lock, "tornado=="), ": the 2 blocks of tornado were removed here"),
    "an extra pin with valid hashes": (lambda lock: append_to(lock, IDNA_3_20),
                                       lambda lock: len(lock.read_text().splitlines()) + 1, " (idna==3.20): added"),
    "a duplicate pin": (lambda lock: duplicate_package(lock, "wcwidth"),
                        lambda lock: first_line(lock, "wcwidth==") + len(wcwidth_block(lock)),
                        " (wcwidth==0.9.4): added"),
    "a hash edited": (lambda lock: flip_hashes(lock, "six"), lambda lock: first_line(lock, "six=="),
                      " (six==1.17.0 ; python_full_version < '3.11'): differs from what was locked"),
}


def wcwidth_block(lock: Path) -> list[str]:
    lines = lock.read_text(encoding="utf-8").splitlines()
    start = first_line(lock, "wcwidth==") - 1
    return lines[start:next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))]


@pytest.mark.parametrize("edit", list(HAND_EDITS))
def test_a_hand_edited_lock_is_refused_by_check_lock_and_build_alike_naming_the_first_edited_line(
        tmp_path: Path, edit: str) -> None:
    """A lock is whole or refused: a removed block (its venv could not start a kernel), an extra pin whose hashes are
    valid, a duplicate pin, an edited hash. --check-lock (CI, no network) and the build say the same: exit 2, the
    first edited line, the command that re-locks; nothing is built."""
    change, line_of, says = HAND_EDITS[edit]
    spec = example_stage(tmp_path / "specs")
    lock = lockfile.lock_path(spec)
    number = line_of(lock)
    change(lock)
    relock = f"re-lock with: python scripts/create_venv.py --spec {spec.as_posix()} --lock"
    checked = run_script("create_venv.py", "--spec", str(spec), "--check-lock")
    assert_one_line_error(checked, 2, f"error: {lock}: line {number}{says}", "edited by hand", relock)
    built = run_script("create_venv.py", "--spec", str(spec), "--venv-root", str(tmp_path / "venvs"),
                       "--kernel-scope", "none")
    assert_one_line_error(built, 2, f"error: {lock}: line {number}{says}", relock)
    assert not (tmp_path / "venvs").exists()


@pytest.mark.parametrize(("damage", "says"), [
    (lambda data: b"\xef\xbb\xbf" + data, "starts with a UTF-8 byte-order mark (BOM)"),
    (lambda data: b"\xff\xfe" + data.decode().encode("utf-16-le"), "is UTF-16"),
    (lambda data: data.replace(b"# via", b"# vi\xe0", 1), "line {via}: is not UTF-8 (byte 0xe0)"),
])
def test_a_lock_saved_in_another_encoding_says_so_and_how_to_fix_it(tmp_path: Path, damage, says: str) -> None:
    spec = example_stage(tmp_path)
    lock = lockfile.lock_path(spec)
    says = says.format(via=first_line(lock, "    # via"))
    lock.write_bytes(damage(lock.read_bytes()))
    done = run_script("create_venv.py", "--spec", str(spec), "--check-lock")
    assert_one_line_error(done, 2, f"error: {lock}: {says}", "--lock")
    assert "header field" not in done.stderr


def test_a_lock_in_the_old_format_is_exit_2_saying_to_re_lock(tmp_path: Path) -> None:
    spec = example_stage(tmp_path)
    lock = lockfile.lock_path(spec)
    as_old_format(lock)
    done = run_script("create_venv.py", "--spec", str(spec), "--check-lock")
    assert_one_line_error(done, 2, f"error: {lock}: lock format 1", "older toolkit",
                          f"re-lock with: python scripts/create_venv.py --spec {spec.as_posix()} --lock")


@pytest.mark.parametrize(("name", "says"), [
    ("no-such-package", "--upgrade-package no-such-package: neither a package of"),
    ("panda", "did you mean 'pandas'?"),
])
def test_upgrade_package_of_a_name_neither_in_the_spec_nor_in_its_lock_is_exit_2_before_resolving(
        tmp_path: Path, name: str, says: str) -> None:
    spec = example_stage(tmp_path, "features")
    lock = lockfile.lock_path(spec)
    before = lock.read_bytes()
    env = {**os.environ, "UV_OFFLINE": "1", "UV_INDEX_URL": "http://127.0.0.1:9/simple"}  # a resolution would fail
    done = run_script("create_venv.py", "--spec", str(spec), "--lock", "--upgrade-package", name, env=env)
    assert_one_line_error(done, 2, says, str(spec), "nothing was locked")
    assert lock.read_bytes() == before


def test_the_example_specs_committed_locks_are_fresh_and_carry_windows_dependencies() -> None:
    """What CI and pre-commit run: milliseconds per spec, no network."""
    started = time.perf_counter()
    done = run_script("create_venv.py", "--spec", str(REPO_ROOT / "specs"), "--check-lock", cwd=REPO_ROOT)
    elapsed = time.perf_counter() - started
    print(f"create_venv.py --check-lock specs/ (3 specs, whole process): {elapsed:.2f}s")
    assert done.returncode == 0 and error_lines(done.stderr) == [] and done.stdout == "", done.stderr
    specs = sorted((REPO_ROOT / "specs").glob("*.yaml"))
    assert len(specs) == 3 and done.stderr.count(": fresh (") == 3
    for path in specs:
        lock = lockfile.read_lock(lockfile.lock_path(path))
        assert lock.header["spec"] == f"specs/{path.name}" and lock.header["checked-on"] == "windows linux macos"
        colorama = [pin for pin in lock.pins if pin.name == "colorama"]
        assert colorama and "sys_platform == 'win32'" in colorama[0].marker and colorama[0].hashes


@pytest.mark.slow
def test_lock_several_specs_one_failing_keeps_its_old_lock_and_check_lock_lists_each_stale_one(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    grows = copy_stage(locked["3.12"], folder)  # a.yaml gets attrs: re-locked, keeping the other pins
    grows = write_spec(folder, grows.source.stem, "3.12", ["six", f"packaging=={OLD_PACKAGING}", "attrs"])
    broken = write_spec(folder, "broken", "3.12", ["six==0.0.999"])  # cannot resolve; has an old (stale) lock
    shutil.copyfile(lockfile.lock_path(grows.source), lockfile.lock_path(broken.source))
    write_spec(folder, "unlocked", "3.12", ["six"])
    broken_lock = lockfile.lock_path(broken.source).read_bytes()

    before = run_script("create_venv.py", "--spec", str(folder), "--check-lock")
    assert before.returncode == 2 and len(error_lines(before.stderr)) == 3, before.stderr
    assert "no lock" in before.stderr and before.stderr.count("stale lock") == 2

    done = run_script("create_venv.py", "--lock", "--spec", str(grows.source), "--spec", str(broken.source))
    assert done.returncode == 4 and done.stdout == "", done.stderr
    [line] = error_lines(done.stderr)
    assert line.startswith(f"error: {broken.source}: resolving for Python 3.12 failed"), line
    assert "nothing was written" in line
    assert f"{lockfile.lock_path(grows.source)}: updated: +attrs " in done.stderr
    assert lockfile.lock_path(broken.source).read_bytes() == broken_lock
    pins = lockfile.pins_for_this_platform(lockfile.check_fresh(grows))
    assert pins["packaging"] == OLD_PACKAGING and "attrs" in pins
    assert sorted(p.name for p in folder.iterdir()) == [  # no temp file left behind
        "broken.lock.txt", "broken.yaml", f"{grows.source.stem}.lock.txt", grows.source.name, "unlocked.yaml"]

    after = run_script("create_venv.py", "--spec", str(folder), "--check-lock", "--quiet")
    assert after.returncode == 2 and after.stdout == ""
    named = [line.split(": ")[1] for line in error_lines(after.stderr)]
    assert named == [str(broken.source), str(folder / "unlocked.yaml")]


@pytest.mark.slow
def test_create_venv_installs_the_lock_stale_or_edited_is_exit_2_and_a_hash_mismatch_exit_4_until_fixed(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    good = copy_stage(locked["3.12"], tmp_path / "specs")
    stale = copy_stage(locked["3.12"], tmp_path / "other")
    stale.source.write_text(stale.source.read_text().replace("  - six\n", "  - six\n  - attrs\n"))
    root, audit_dir = tmp_path / "venvs", tmp_path / "artifacts" / "audit"
    args = ["--venv-root", str(root), "--kernel-scope", "none"]

    refused = run_script("create_venv.py", "--spec", str(good.source), "--spec", str(stale.source), *args)
    assert refused.returncode == 2 and refused.stdout == ""
    assert error_lines(refused.stderr) == [
        f"error: {stale.source}: stale lock {lockfile.lock_path(stale.source)} (packages or index settings changed since "
        f"it was locked at {lockfile.read_lock(lockfile.lock_path(stale.source)).header['resolved-at']}); refresh it with: "
        f"python scripts/create_venv.py --spec {stale.source.as_posix()} --lock"]
    assert not root.exists()  # nothing built, not even the good spec's venv

    first = run_script("create_venv.py", "--spec", str(good.source), "--audit-dir", str(audit_dir), *args)
    assert first.returncode == 0, first.stderr
    venv = Path(first.stdout.strip())
    lock = lockfile.lock_path(good.source)
    assert f"from {lock} with uv (hashes required)" in first.stderr and "unpinned" not in first.stderr
    assert (audit_dir / audit.LOCK_TXT).read_bytes() == lock.read_bytes()
    assert json.loads((audit_dir / "env.json").read_text())["lock"]["verified"] is True
    again = run_script("create_venv.py", "--spec", str(good.source), *args)
    assert again.returncode == 0 and again.stderr.strip() == f"reusing {venv} (spec and interpreter unchanged)"

    committed = lock.read_bytes()
    flip_hashes(lock, "six")  # by hand: the seal says so before anything is touched
    edited = run_script("create_venv.py", "--spec", str(good.source), *args)
    assert edited.returncode == 2 and "edited by hand" in error_lines(edited.stderr)[0], edited.stderr
    assert (venv / "audit" / "env.json").is_file()  # the venv built from the good lock is untouched
    reseal(lock)  # a whole lock, but the index serves other files than the ones locked
    tampered = run_script("create_venv.py", "--spec", str(good.source), *args)
    assert tampered.returncode == 4 and tampered.stdout == ""
    line = tampered.stderr.strip().splitlines()[-1]  # ours; uv's own streamed output has "error:" lines too
    assert line.startswith(f"error: {lock}: hash mismatch for six==") and "marked incomplete" in line, line
    assert (venv / ".mlops_kit").is_file() and not (venv / "audit" / "env.json").exists()  # never used
    lock.write_bytes(committed)
    fixed = run_script("create_venv.py", "--spec", str(good.source), *args)
    assert fixed.returncode == 0 and "a previous build did not finish" in fixed.stderr, fixed.stderr
    assert audit.read_env(venv).lock.sha256 == lockfile.read_lock(lock).sha256


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_lock_missing_a_needed_package_fails_the_closure_check_and_its_venv_is_never_used(
        locked: dict[str, StageSpec], tmp_path: Path, installer: str, pip_cache: Path) -> None:
    """A lock without tornado, sealed as if a writer had left it out: the install itself succeeds (exact pins, no
    resolution) and the freeze equals the lock, but ipykernel needs tornado, so the venv could not start a kernel.
    The dependency closure check (uv pip check / pip check) makes that exit 4: no env.json, no kernel."""
    spec = copy_stage(locked["3.12"], tmp_path / "specs")
    lock = lockfile.lock_path(spec.source)
    drop_package(lock, "tornado")
    reseal(lock)
    assert lockfile.check_fresh(spec) and "tornado" not in lock.read_text()
    root = tmp_path / "venvs"
    done = run_script("create_venv.py", "--spec", str(spec.source), "--venv-root", str(root), "--installer", installer)
    assert done.returncode == 4 and done.stdout == "", done.stderr
    line = error_lines(done.stderr)[-1]
    assert "installed packages miss requirements:" in line and "tornado" in line, line
    assert f"the lock {lock} is not whole: re-lock with: " in line and "marked incomplete" in line
    venv = root / spec.venv_name
    assert (venv / ".mlops_kit").is_file() and not (venv / "audit" / "env.json").exists()
    assert not kernel_registered(build.kernel.kernel_name_for(spec.venv_name))


# ------------------------------------------------------------------------------------- a Python this machine lacks


def _no_python_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No installed Python: PATH without one, pyenv elsewhere (the uv downloads list is the tests' empty one)."""
    (tmp_path / "empty-bin").mkdir(exist_ok=True)
    return {**os.environ, "PATH": str(tmp_path / "empty-bin"), "PYENV_ROOT": str(tmp_path / "no-pyenv"), **extra}


@pytest.mark.parametrize(("args", "extra", "why"), [
    (["--python-downloads", "never"], {}, "--python-downloads never"),
    ([], {"MLOPS_PYTHON_DOWNLOADS": "never"}, "MLOPS_PYTHON_DOWNLOADS=never"),
    ([], {"UV_PYTHON_DOWNLOADS": "manual"}, "UV_PYTHON_DOWNLOADS=manual"),
])
def test_downloads_off_and_the_python_missing_is_exit_3_one_line_nothing_made(
        tmp_path: Path, spec_file: Path, args: list[str], extra: dict[str, str], why: str) -> None:
    root = tmp_path / "venvs"
    done = run_script("create_venv.py", "--spec", str(spec_file), "--venv-root", str(root), *args,
                      env=_no_python_env(tmp_path, **extra))
    assert_one_line_error(done, 3, "no Python matching '3.12' found", f"downloads are off ({why})",
                          "'pyenv install 3.12'", "--python-downloads auto", "UV_PYTHON_INSTALL_MIRROR",
                          f"uv-managed {tmp_path / 'pythons'} (none yet)")
    assert not root.exists() and not (tmp_path / "pythons").exists()


def test_no_download_for_the_request_is_exit_3_not_4(tmp_path: Path, spec_file: Path) -> None:
    """Downloads allowed, but uv's list offers nothing (the tests' list is empty; behind a firewall: no mirror)."""
    done = run_script("create_venv.py", "--spec", str(spec_file), "--venv-root", str(tmp_path / "venvs"),
                      env=_no_python_env(tmp_path))
    assert_one_line_error(done, 3, "has no CPython build matching '3.12'", "UV_PYTHON_DOWNLOADS_JSON_URL=",
                          "UV_PYTHON_INSTALL_MIRROR")
    assert not (tmp_path / "venvs").exists() and not (tmp_path / "pythons").exists()


def test_a_bad_downloads_setting_is_exit_2(tmp_path: Path, spec_file: Path) -> None:
    done = run_script("create_venv.py", "--spec", str(spec_file), "--venv-root", str(tmp_path / "venvs"),
                      env=_no_python_env(tmp_path, MLOPS_PYTHON_DOWNLOADS="sometimes"))
    assert_one_line_error(done, 2, "MLOPS_PYTHON_DOWNLOADS='sometimes': choose one of auto, never")
    done = run_script("create_venv.py", "--spec", str(spec_file), "--python-downloads", "maybe")
    assert done.returncode == 2 and "--python-downloads" in done.stderr
