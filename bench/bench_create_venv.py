"""Benchmark (not a test): create_venv.py vs ``python -m venv`` + ``pip install``, measured side by side in one run.

Figures printed (same spec, same base Python, same package list + ipykernel on both sides):

* cold build: a new venv with a registered kernel (the pip side runs ``ipykernel install --user`` too, for the
  same end result), with a warm installer cache (the tool's everyday path: a new stage or a changed spec)
  and, for honesty, with an empty cache on both sides (first run on a fresh agent). Goal: >= 10x faster than pip.
* unchanged-spec re-run: median wall time of ``create_venv.py`` over N runs (a whole process, as a GoCD job
  runs it: interpreter discovery, health check, kernel check). Goal: <= 0.5 s.
* disk: extra space taken by a second venv with the same packages, counting hard-linked files once (as ``du``
  does across its arguments; uv links from its cache). Goal: <= 10 % of the first venv.

Usage::

    python bench/bench_create_venv.py [--python-version 3.12] [--runs 5] [--keep]

Everything is built in a temporary folder (the uv cache used for the warm case is ``$UV_CACHE_DIR``, else the
repo's ``.cache/uv``); Jupyter kernels go to a private ``JUPYTER_DATA_DIR``. pip runs without the machine's pip
config files (``PIP_CONFIG_FILE`` = devnull) so both installers see the same index (PyPI).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from mlops_kit import envs, interpreters, spec  # noqa: E402

PACKAGES = ("pandas", "requests", "pyyaml", "tqdm")
SPEC_TEXT = """\
stage: bench
python_version: "{version}"
venv_name: bench-venv
packages:
{packages}
kernel_display_name: "Bench ({version})"
"""

DISCOVER = ("import sys; sys.path.insert(0, r'{scripts}'); from mlops_kit import interpreters, spec; "
            "interpreters.find_python(spec.parse_python_request('{version}'))")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"benchmark command failed ({done.returncode}): {cmd}\n{done.stderr[-3000:]}")
    return elapsed


def tool_build(spec_file: Path, root: Path, env: dict[str, str], *extra: str) -> float:
    return timed([sys.executable, str(REPO / "scripts" / "create_venv.py"), "--spec", str(spec_file),
                  "--venv-root", str(root), *extra], env)


def pip_build(base: Path, venv: Path, env: dict[str, str], *extra: str) -> float:
    started = time.perf_counter()
    timed([str(base), "-m", "venv", str(venv)], env)
    timed([str(envs.venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", *extra,
           *PACKAGES, "ipykernel"], env)
    timed([str(envs.venv_python(venv)), "-m", "ipykernel", "install", "--user", "--name", venv.name], env)
    return time.perf_counter() - started


def disk_usage(paths: list[Path], seen: set[tuple[int, int]]) -> int:
    """Bytes on disk under ``paths`` for inodes not in ``seen`` (updated): hard links counted once, like du."""
    total = 0
    for top in paths:
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                st = os.lstat(os.path.join(folder, name))
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "ML_VENV_ROOT", "VIRTUAL_ENV"))}
    env.update(JUPYTER_DATA_DIR=str(work / "jupyter"), PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR") or str(REPO / ".cache" / "uv"))
    return env


def run(version: str, runs: int, work: Path) -> list[tuple[str, str, str]]:
    base = interpreters.find_python(spec.parse_python_request(version)).path
    spec_file = work / "bench.yaml"
    spec_file.write_text(SPEC_TEXT.format(version=version, packages="".join(f"  - {p}\n" for p in PACKAGES)))
    env = base_env(work)
    pip_warm = {**env, "PIP_CACHE_DIR": str(work / "pip-cache")}
    print(f"warming the uv and pip caches (untimed) with Python {version} at {base} ...", flush=True)
    tool_build(spec_file, work / "warmup", env)
    pip_build(base, work / "pip-warmup", pip_warm)

    tool_warm = tool_build(spec_file, work / "tool-1", env)
    pip_cached = pip_build(base, work / "pip-1", pip_warm)
    tool_cold = tool_build(spec_file, work / "tool-cold", {**env, "UV_CACHE_DIR": str(work / "uv-empty")})
    pip_cold = pip_build(base, work / "pip-cold", env, "--no-cache-dir")
    reruns = [tool_build(spec_file, work / "tool-1", env) for _ in range(runs)]
    pinned = [tool_build(spec_file, work / "tool-1", env, "--python", str(base)) for _ in range(runs)]
    no_shims = {**env, "PATH": os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                               if not p.rstrip("/\\").endswith("shims"))}
    unshimmed = [tool_build(spec_file, work / "tool-1", no_shims) for _ in range(runs)]
    discovery = [timed([sys.executable, "-c", DISCOVER.format(scripts=REPO / "scripts", version=version)], env)
                 for _ in range(runs)]
    tool_build(spec_file, work / "tool-2", env)
    pip_build(base, work / "pip-2", pip_warm)

    seen: set[tuple[int, int]] = set()
    tool_first = disk_usage([work / "tool-1"], seen)
    tool_second = disk_usage([work / "tool-2"], seen)
    seen = set()
    pip_first = disk_usage([work / "pip-1"], seen)
    pip_second = disk_usage([work / "pip-2"], seen)
    rerun = statistics.median(reruns)
    mib = 1024 * 1024
    return [
        ("cold build, warm cache: create_venv (uv)", f"{tool_warm:.2f} s", ""),
        ("cold build, warm cache: venv + pip install", f"{pip_cached:.2f} s",
         f"{pip_cached / tool_warm:.1f}x faster (goal >= 10x)"),
        ("cold build, empty caches: create_venv (uv)", f"{tool_cold:.2f} s", ""),
        ("cold build, empty caches: venv + pip --no-cache-dir", f"{pip_cold:.2f} s",
         f"{pip_cold / tool_cold:.1f}x faster"),
        (f"unchanged-spec re-run, median of {runs}", f"{rerun:.3f} s",
         f"goal <= 0.5 s ({'met' if rerun <= 0.5 else 'NOT met'}); min {min(reruns):.3f} max {max(reruns):.3f}"),
        ("  same, with --python PATH (no discovery), median", f"{statistics.median(pinned):.3f} s", ""),
        ("  same, pyenv shims removed from PATH, median", f"{statistics.median(unshimmed):.3f} s",
         "(probing each pyenv shim costs a bash + pyenv start)"),
        ("  interpreter discovery alone (fresh process), median", f"{statistics.median(discovery):.3f} s", ""),
        ("disk: first venv (create_venv)", f"{tool_first / mib:.1f} MiB", ""),
        ("disk: second venv, extra (create_venv)", f"{tool_second / mib:.1f} MiB",
         f"{100 * tool_second / tool_first:.1f}% of first (goal <= 10%)"),
        ("disk: first venv (pip)", f"{pip_first / mib:.1f} MiB", ""),
        ("disk: second venv, extra (pip)", f"{pip_second / mib:.1f} MiB",
         f"{100 * pip_second / pip_first:.1f}% of first"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_create_venv-"))
    try:
        rows = run(args.python_version, args.runs, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\npackages: {', '.join(PACKAGES)} + ipykernel; Python {args.python_version}; {os.cpu_count()} CPUs")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>11}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
