"""Build (or reuse) the venv of one pipeline stage from its spec, register its Jupyter kernel, keep an audit trail.

Thin command-line edge over :mod:`mlops_kit.envs` (build and cache), :mod:`mlops_kit.installers`,
:mod:`mlops_kit.audit` and :mod:`mlops_kit.kernel`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlops_kit import cli, console, envs, errors, installers, interpreters, kernel, paths, pyinstall, spec  # noqa: E402

DESCRIPTION = """\
Build the venv a pipeline stage runs in, from specs/<stage>.yaml, and register it as a Jupyter kernel.

The venv goes to <venv root>/<venv_name>. The venv root is --venv-root, else the ML_VENV_ROOT environment
variable (GoCD sets it), else a per-user folder (%LOCALAPPDATA%\\mlops_kit\\venvs on Windows,
~/.local/share/mlops_kit/venvs elsewhere). Packages plus ipykernel are installed with uv (fast, from its cache)
or with --installer pip; pip is always available inside the venv, so %pip works in Jupyter.

Re-running with an unchanged spec and interpreter reuses the venv (no install) after a health check; a changed
package list, Python request, interpreter, installer or freeze file rebuilds it, and the reason is printed.
An interrupted build is never reused. A folder at the venv path that this tool did not create is refused and
left untouched. Several runs on the same spec at once are safe: one builds, the others wait and reuse.

Package index: the spec's index_url / extra_index_urls, else PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (or uv's
UV_DEFAULT_INDEX / UV_INDEX), handed to uv and pip alike. pip.ini / pip.conf is read by pip only, so put a
corporate mirror in the spec or in those variables. With extra indexes uv takes a package from the first index
that has it (safe against dependency confusion); set UV_INDEX_STRATEGY=unsafe-best-match for pip's behaviour.

Audit bundle in <venv>/audit: pip_freeze.txt (exact versions), spec.yaml (the spec as used) and env.json
(interpreter, platform, installer, hashes, creation time, toolkit version and git SHA); --audit-dir copies it.
Progress goes to stderr; the last line on stdout is the venv path.

examples (Windows cmd):
  python scripts\\create_venv.py --spec specs\\ingest.yaml
  python scripts\\create_venv.py --spec specs\\ingest.yaml --venv-root "D:\\ML venvs" --audit-dir out\\audit
  python scripts\\create_venv.py --spec specs\\train.yaml --python "C:\\Python310\\python.exe" --installer pip
  for /f "delims=" %v in ('python scripts\\create_venv.py --spec specs\\ingest.yaml --quiet') do set VENV=%v

examples (PowerShell):
  python scripts\\create_venv.py --spec specs\\ingest.yaml --kernel-scope none
  python scripts\\create_venv.py --spec specs\\train.yaml --install-python
  $venv = python scripts\\create_venv.py --spec specs\\ingest.yaml --quiet | Select-Object -Last 1
  python scripts\\create_venv.py --spec specs\\ingest.yaml --from-freeze audit\\pip_freeze.txt --force

examples (Linux/macOS):
  python scripts/create_venv.py --spec specs/ingest.yaml --venv-root ~/venvs
"""


def build_parser() -> cli.ArgParser:
    parser = cli.ArgParser(prog="create_venv.py", description=DESCRIPTION)
    parser.add_argument("--spec", required=True, type=Path, help="the stage spec (specs/<stage>.yaml)")
    parser.add_argument("--venv-root", type=Path,
                        help="folder holding the stage venvs (default: $ML_VENV_ROOT, else the per-user folder)")
    parser.add_argument("--python", type=Path, metavar="PATH",
                        help="use this interpreter instead of discovering one (must satisfy python_version)")
    parser.add_argument("--install-python", action="store_true",
                        help="if no installed Python matches python_version, install one (Windows: the Python "
                             "install manager, winget, pyenv-win or choco; elsewhere pyenv), then build")
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
    parser.add_argument("--quiet", action="store_true", help="print only errors and the venv path")
    return parser


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    stage = spec.load_spec(args.spec)
    root = paths.venv_root(args.venv_root)
    envs.refuse_unowned(Path(os.path.abspath(root)) / stage.venv_name)  # bad input before slow discovery
    if args.from_freeze is not None:
        installers.read_freeze(args.from_freeze)
    if args.audit_dir is not None and args.audit_dir.exists() and not args.audit_dir.is_dir():
        raise errors.BadInput(f"--audit-dir {args.audit_dir}: exists and is not a folder")  # before the build
    echo = console.silent if args.quiet else console.progress
    if args.install_python and args.python is None:
        interp = pyinstall.install_python(stage.python, echo=echo)
    else:
        interp = interpreters.find_python(stage.python, explicit=args.python)
    result = envs.ensure_env(
        stage, venv_root=root, interpreter=interp, installer=args.installer, force=args.force,
        from_freeze=args.from_freeze, kernel_scope=args.kernel_scope, audit_dir=args.audit_dir, echo=echo,
    )
    print(result.venv_dir, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
