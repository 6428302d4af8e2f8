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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from mlops_kit.core import paths  # noqa: E402
from mlops_kit.envs import interpreters, spec  # noqa: E402

PACKAGES = ("pandas", "requests", "pyyaml", "tqdm")
SPEC_TEXT = """\
stage: bench
python_version: "{version}"
venv_name: bench-venv
packages:
{packages}
kernel_display_name: "Bench ({version})"
"""

DISCOVER = ("import sys; sys.path.insert(0, r'{scripts}'); from mlops_kit.envs import interpreters, spec; "
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
    timed([str(paths.venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", *extra,
           *PACKAGES, "ipykernel"], env)
    timed([str(paths.venv_python(venv)), "-m", "ipykernel", "install", "--user", "--name", venv.name], env)
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


def measure(version: str, runs: int, work: Path) -> dict[str, Any]:
    """Every timing and size, tool and pip interleaved so both see the same machine load."""
    base = interpreters.find_python(spec.parse_python_request(version)).path
    spec_file = work / "bench.yaml"
    spec_file.write_text(SPEC_TEXT.format(version=version, packages="".join(f"  - {p}\n" for p in PACKAGES)))
    env = base_env(work)
    pip_warm = {**env, "PIP_CACHE_DIR": str(work / "pip-cache")}
    no_shims = {**env, "PATH": os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                               if not p.rstrip("/\\").endswith("shims"))}
    discover = [sys.executable, "-c", DISCOVER.format(scripts=REPO / "scripts", version=version)]
    print(f"warming the uv and pip caches (untimed) with Python {version} at {base} ...", flush=True)
    tool_build(spec_file, work / "warmup", env)
    pip_build(base, work / "pip-warmup", pip_warm)
    m: dict[str, Any] = {
        "tool_warm": tool_build(spec_file, work / "tool-1", env),
        "pip_warm": pip_build(base, work / "pip-1", pip_warm),
        "tool_pinned": tool_build(spec_file, work / "tool-pinned", env, "--python", str(base)),
        "tool_cold": tool_build(spec_file, work / "tool-cold", {**env, "UV_CACHE_DIR": str(work / "uv-empty")}),
        "pip_cold": pip_build(base, work / "pip-cold", env, "--no-cache-dir"),
        "reruns": [tool_build(spec_file, work / "tool-1", env) for _ in range(runs)],
        "pinned": [tool_build(spec_file, work / "tool-1", env, "--python", str(base)) for _ in range(runs)],
        "unshimmed": [tool_build(spec_file, work / "tool-1", no_shims) for _ in range(runs)],
        "discovery": [timed(discover, env) for _ in range(runs)],
    }
    tool_build(spec_file, work / "tool-2", env)
    pip_build(base, work / "pip-2", pip_warm)
    seen: set[tuple[int, int]] = set()
    m["tool_first"], m["tool_second"] = disk_usage([work / "tool-1"], seen), disk_usage([work / "tool-2"], seen)
    seen = set()
    m["pip_first"], m["pip_second"] = disk_usage([work / "pip-1"], seen), disk_usage([work / "pip-2"], seen)
    return m


def table(m: dict[str, Any], runs: int) -> list[tuple[str, str, str]]:
    rerun, med, mib = statistics.median(m["reruns"]), statistics.median, 1024 * 1024
    return [
        ("cold build, warm cache: create_venv (uv)", f"{m['tool_warm']:.2f} s", ""),
        ("cold build, warm cache: venv + pip install", f"{m['pip_warm']:.2f} s",
         f"{m['pip_warm'] / m['tool_warm']:.1f}x faster (goal >= 10x)"),
        ("  same build with --python PATH (no discovery)", f"{m['tool_pinned']:.2f} s",
         f"{m['pip_warm'] / m['tool_pinned']:.1f}x faster than pip"),
        ("cold build, empty caches: create_venv (uv)", f"{m['tool_cold']:.2f} s", ""),
        ("cold build, empty caches: venv + pip --no-cache-dir", f"{m['pip_cold']:.2f} s",
         f"{m['pip_cold'] / m['tool_cold']:.1f}x faster"),
        (f"unchanged-spec re-run, median of {runs}", f"{rerun:.3f} s",
         f"goal <= 0.5 s ({'met' if rerun <= 0.5 else 'NOT met'}); min {min(m['reruns']):.3f} "
         f"max {max(m['reruns']):.3f}"),
        ("  same, with --python PATH (no discovery), median", f"{med(m['pinned']):.3f} s", ""),
        ("  same, pyenv shims removed from PATH, median", f"{med(m['unshimmed']):.3f} s",
         "(probing each pyenv shim costs a bash + pyenv start)"),
        ("  interpreter discovery alone (fresh process), median", f"{med(m['discovery']):.3f} s", ""),
        ("disk: first venv (create_venv)", f"{m['tool_first'] / mib:.1f} MiB", ""),
        ("disk: second venv, extra (create_venv)", f"{m['tool_second'] / mib:.1f} MiB",
         f"{100 * m['tool_second'] / m['tool_first']:.1f}% of first (goal <= 10%)"),
        ("disk: first venv (pip)", f"{m['pip_first'] / mib:.1f} MiB", ""),
        ("disk: second venv, extra (pip)", f"{m['pip_second'] / mib:.1f} MiB",
         f"{100 * m['pip_second'] / m['pip_first']:.1f}% of first"),
    ]


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_create_venv-"))
    if args.keep:
        print(f"working in {work}")
    try:
        load = _load()
        rows = table(measure(args.python_version, args.runs, work), args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\npackages: {', '.join(PACKAGES)} + ipykernel; Python {args.python_version}; {os.cpu_count()} CPUs; "
          f"1-min load average {load:.1f} at start, {_load():.1f} at end (other work on the machine skews times)")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>11}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
