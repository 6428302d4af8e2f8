"""Build (or reuse) the venv of one pipeline stage from its spec, register its Jupyter kernel, keep an audit trail.

Thin command-line edge over :mod:`mlops_kit.envs.build` (build and cache), :mod:`mlops_kit.envs.lockfile` and
:mod:`mlops_kit.envs.resolution` (lock files), :mod:`mlops_kit.envs.installers`, :mod:`mlops_kit.envs.audit` and
:mod:`mlops_kit.envs.kernel`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from packaging.utils import InvalidName, canonicalize_name

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlops_kit.core import cli, console, errors, paths  # noqa: E402
from mlops_kit.envs import (  # noqa: E402
    build,
    installers,
    kernel,
    lockfile,
    managed,
    pyinstall,
    resolution,
    spec,
)

DESCRIPTION = """\
Build the venv a pipeline stage runs in, from specs/<stage>.yaml, and register it as a Jupyter kernel.

The venv goes to <venv root>/<venv_name>. The venv root is --venv-root, else the ML_VENV_ROOT environment
variable (GoCD sets it), else a per-user folder (%LOCALAPPDATA%\\mlops_kit\\venvs on Windows,
~/.local/share/mlops_kit/venvs elsewhere). Packages plus ipykernel are installed with uv (fast, from its cache)
or with --installer pip; pip is always available inside the venv, so %pip works in Jupyter.

Locked environments: with a lock next to the spec (specs/<stage>.lock.txt, committed with it) the venv gets
exactly the lock's versions, every file's sha256 checked, nothing resolved, and its freeze is verified against the
lock (env.json records it; the audit bundle holds a copy). --lock writes the locks of the given specs (one lock
serves Windows, Linux and macOS for the spec's Python minor and later; existing pins are kept unless --upgrade or
--upgrade-package NAME); it builds nothing unless --build is added. A lock older than its spec (stale) stops the
build with exit 2 and the command that refreshes it. A lock is whole or refused: a digest in its header covers
every line, so a lock edited by hand (a package removed or added, a hash changed) is exit 2 naming the first
edited line; so is one saved with a byte-order mark or pinning a package twice for Windows, Linux or macOS.
--check-lock applies the same rules to every given lock in milliseconds without network (for CI and pre-commit).
A downloaded file whose hash does not match the lock is exit 4, its venv never used. After every install the
venv's dependency closure is checked (uv pip check / pip check): a missing requirement is exit 4, venv unused.
Without a lock the packages are resolved at build time, as before, and the build says it is unpinned.
--spec may be repeated or name a folder (all its *.yaml specs).

The Python: --python, else an installed one (py launcher, pyenv-win, PATH, pyenv), else one uv installed earlier
into the toolkit's folder of Pythons (UV_PYTHON_INSTALL_DIR, else "pythons" next to the venv root), else it is
downloaded there through uv (python-build-standalone; nothing is added to PATH folders or the registry; once per
machine: later builds reuse it). --python-downloads never (or MLOPS_PYTHON_DOWNLOADS=never, or uv's
UV_PYTHON_DOWNLOADS=never/manual) turns downloads off: a missing Python is then exit 3. Behind a firewall, point
uv at a mirror: UV_PYTHON_INSTALL_MIRROR (a copy of the python-build-standalone releases) or
UV_PYTHON_DOWNLOADS_JSON_URL (a downloads list of your own). env.json records where the interpreter came from.

Re-running with an unchanged spec and interpreter reuses the venv (no install) after a health check; a changed
package list, Python request, interpreter, installer, lock or freeze file rebuilds it, and the reason is
printed. --from-freeze installs that file's pins even when the spec has a lock (said so; env.json records it).
An interrupted build is never reused. A folder at the venv path that this tool did not create is refused and
left untouched. Several runs on the same spec at once are safe: one builds, the others wait and reuse.

Package index: the spec's index_url / extra_index_urls, else PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (or uv's
UV_DEFAULT_INDEX / UV_INDEX), handed to uv and pip alike. pip.ini / pip.conf is read by pip only, so put a
corporate mirror in the spec or in those variables. With extra indexes uv takes a package from the first index
that has it (safe against dependency confusion); set UV_INDEX_STRATEGY=unsafe-best-match for pip's behaviour.

Audit bundle in <venv>/audit: pip_freeze.txt (exact versions), spec.yaml (the spec as used), spec.lock.txt
(the lock installed, if any) and env.json (interpreter, platform, installer, hashes, lock, creation time, toolkit
version and git SHA); --audit-dir copies it.
Progress goes to stderr; stdout gets the venv path (one line per spec built, nothing else).

examples (Windows cmd):
  python scripts\\create_venv.py --spec specs\\ingest.yaml
  python scripts\\create_venv.py --spec specs\\train.yaml --lock
  python scripts\\create_venv.py --spec specs --check-lock
  python scripts\\create_venv.py --spec specs\\ingest.yaml --venv-root "D:\\ML venvs" --audit-dir out\\audit
  python scripts\\create_venv.py --spec specs\\train.yaml --python "C:\\Python310\\python.exe" --installer pip
  for /f "delims=" %v in ('python scripts\\create_venv.py --spec specs\\ingest.yaml --quiet') do set VENV=%v

examples (PowerShell):
  python scripts\\create_venv.py --spec specs\\ingest.yaml --spec specs\\train.yaml --lock --upgrade-package pandas
  python scripts\\create_venv.py --spec specs\\ingest.yaml --kernel-scope none
  python scripts\\create_venv.py --spec specs\\train.yaml --install-python
  $env:UV_PYTHON_INSTALL_MIRROR = "https://nexus.corp.example/repository/python-build-standalone"
  python scripts\\create_venv.py --spec specs\\ingest.yaml --python-downloads never
  $venv = python scripts\\create_venv.py --spec specs\\ingest.yaml --quiet | Select-Object -Last 1
  python scripts\\create_venv.py --spec specs\\ingest.yaml --from-freeze audit\\pip_freeze.txt --force

examples (Linux/macOS):
  python scripts/create_venv.py --spec specs/ingest.yaml --venv-root ~/venvs
  python scripts/create_venv.py --spec specs/ --lock --build     # lock every stage, then build them all
  python scripts/create_venv.py --spec specs/ --check-lock       # CI / pre-commit: exit 2 if a lock is stale
"""


def build_parser() -> cli.ArgParser:
    parser = cli.ArgParser(prog="create_venv.py", description=DESCRIPTION)
    parser.add_argument("--spec", required=True, type=Path, action="append",
                        help="a stage spec (specs/<stage>.yaml) or a folder of them (its *.yaml); repeatable")
    parser.add_argument("--venv-root", type=Path,
                        help="folder holding the stage venvs (default: $ML_VENV_ROOT, else the per-user folder)")
    parser.add_argument("--python", type=Path, metavar="PATH",
                        help="use this interpreter instead of discovering one (must satisfy python_version)")
    parser.add_argument("--install-python", action="store_true",
                        help="if no installed Python matches python_version, install one (Windows: the Python "
                             "install manager, winget, pyenv-win or choco; elsewhere pyenv), then build")
    parser.add_argument("--python-downloads", choices=managed.CHOICES, metavar="{auto,never}",
                        help="when no installed Python matches: download one through uv (auto, the default) or stop "
                             "with exit 3 (never); default: $MLOPS_PYTHON_DOWNLOADS, else uv's UV_PYTHON_DOWNLOADS")
    parser.add_argument("--installer", choices=installers.INSTALLERS, default="uv",
                        help="uv (default, fast) or pip (fallback, e.g. when uv cannot reach your index)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the venv is up to date")
    parser.add_argument("--from-freeze", type=Path, metavar="FILE",
                        help="install exactly the versions in this pip_freeze.txt (e.g. from an earlier audit)")
    parser.add_argument("--kernel-scope", choices=kernel.SCOPES, default="user",
                        help="where to register the Jupyter kernel: user (default; JupyterLab sees it), "
                             "sys-prefix (the Python running this tool) or none")
    parser.add_argument("--audit-dir", type=Path, metavar="DIR",
                        help="also copy the audit bundle here (e.g. a GoCD artifact folder; created if needed)")
    parser.add_argument("--lock", action="store_true",
                        help="write each spec's lock (specs/<stage>.lock.txt: exact versions and sha256 hashes for "
                             "Windows, Linux and macOS); builds nothing unless --build is given too")
    parser.add_argument("--build", action="store_true",
                        help="with --lock: then build the venvs from the new locks (if every lock was written)")
    parser.add_argument("--upgrade", action="store_true",
                        help="with --lock: re-resolve every package (default: keep the pins the spec still allows)")
    parser.add_argument("--upgrade-package", action="append", default=[], metavar="NAME",
                        help="with --lock: re-resolve this package only (repeatable; a package of the spec or "
                             "pinned in its lock)")
    parser.add_argument("--check-lock", action="store_true",
                        help="only check each spec's lock as a build would (fresh, whole, well-formed; no network, "
                             "no build): one line per refused lock, exit 2 if any (for CI and pre-commit)")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the venv path(s)")
    return parser


def _check_flags(args: argparse.Namespace, count: int) -> None:
    """Refuse flag combinations that mean nothing, before anything is read from the network or built."""
    if args.check_lock and (args.lock or args.build):
        raise errors.BadInput("create_venv.py: --check-lock only checks; leave out --lock/--build (see --help)")
    for flag, given in (("--build", args.build), ("--upgrade", args.upgrade),
                        ("--upgrade-package", args.upgrade_package)):
        if given and not args.lock:
            raise errors.BadInput(f"create_venv.py: {flag} goes with --lock (see --help)")
    for name in args.upgrade_package:
        try:
            canonicalize_name(name, validate=True)
        except InvalidName:
            raise errors.BadInput(f"create_venv.py: --upgrade-package {name!r}: not a package name (a project name "
                                  "as on PyPI, e.g. pandas)") from None
    if args.lock and args.from_freeze is not None:
        raise errors.BadInput("create_venv.py: --from-freeze and --lock contradict each other (see --help)")
    for flag, given in (("--python", args.python), ("--from-freeze", args.from_freeze),
                        ("--audit-dir", args.audit_dir)):
        if given is not None and count > 1:
            raise errors.BadInput(f"create_venv.py: {flag} applies to one spec, {count} given (see --help)")


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    files = spec.spec_files(args.spec)
    _check_flags(args, len(files))
    echo = console.silent if args.quiet else console.progress
    if args.check_lock:
        return _report(lockfile.check_locks(files, echo=echo), errors.EXIT_BAD_INPUT)
    stages = [spec.load_spec(f) for f in files]  # every spec valid before anything is resolved or built
    if args.lock:
        failed = _report(resolution.write_locks(stages, upgrade=args.upgrade, upgrade_packages=args.upgrade_package,
                                             echo=echo), errors.EXIT_ENV_BUILD)
        if failed or not args.build:
            return failed
    root = paths.venv_root(args.venv_root)
    args.policy = managed.download_policy(args.python_downloads)  # a bad setting: exit 2 before anything is built
    for stage in stages:  # bad input (a foreign folder, a stale lock) before slow discovery and any build
        build.refuse_unowned(Path(os.path.abspath(root)) / stage.venv_name)
        build.lock_for(stage, args.from_freeze)
    if args.from_freeze is not None:
        installers.read_freeze(args.from_freeze)
    if args.audit_dir is not None and args.audit_dir.exists() and not args.audit_dir.is_dir():
        raise errors.BadInput(f"--audit-dir {args.audit_dir}: exists and is not a folder")  # before the build
    for stage in stages:
        _build(stage, root, args, echo)
    return 0


def _build(stage: spec.StageSpec, root: Path, args: argparse.Namespace, echo: console.Echo) -> None:
    folder = managed.pythons_dir(root)
    if args.install_python and args.python is None:
        interp = pyinstall.install_python(stage.python, echo=echo, managed=folder)
    else:
        interp = managed.find_or_download(stage.python, folder=folder, policy=args.policy, explicit=args.python,
                                          echo=echo)
    result = build.ensure_env(
        stage, venv_root=root, interpreter=interp, installer=args.installer, force=args.force,
        from_freeze=args.from_freeze, kernel_scope=args.kernel_scope, audit_dir=args.audit_dir, echo=echo,
    )
    print(result.venv_dir, flush=True)


def _report(problems: list[str], code: int) -> int:
    """One error line per problem (every stale lock, every spec that failed to lock); ``code`` if any."""
    for line in problems:
        console.error(line)
    return code if problems else 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
