"""End to end, issue 17's secrets cases: every value known to be secret is masked wherever the toolkit writes text.

Each test runs ``run_notebook.py`` on a real venv and kernel, then greps EVERY file written (the output folder, the
venv's audit files, the tracking store's database file bytes and artifact folder, the server's log) and what a real
``mlflow server`` hands back to ``MlflowClient`` (params, tags, every artifact downloaded) for each secret.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient

from helpers import run_script
from helpers_notebook import env_with, private_mlflow_server, run_nb

pytestmark = pytest.mark.slow

API_KEY, DB_PASSWORD = "sk-ERRKEY-4455", "ErrPassw0rd77"
DB_URL = f"https://bob:{DB_PASSWORD}@db.example.com/x"


def _notebook(path: Path, *cells: str, parameters: str = 'api_key = ""\ndb_url = ""\n') -> Path:
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(source) for source in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def _leaks(secrets: tuple[str, ...], *roots: Path) -> list[str]:
    """Every file under ``roots`` (bytes: a database file too) holding one of ``secrets``, as ``path: secret``."""
    found = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def _server_leaks(uri: str, secrets: tuple[str, ...], download: Path) -> tuple[list[str], list[MlflowClient]]:
    """What the server hands back, searched: every run's params and tags, every artifact downloaded."""
    client = MlflowClient(uri)
    found: list[str] = []
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    for run in runs:
        text = json.dumps({"params": run.data.params, "tags": run.data.tags, "name": run.info.run_name})
        found += [f"run {run.info.run_id} params/tags: {s}" for s in secrets if s in text]
        folder = download / run.info.run_id
        folder.mkdir(parents=True)
        client.download_artifacts(run.info.run_id, "", str(folder))
    return found + _leaks(secrets, download), runs


def test_issue_17_1_a_secret_inside_an_exception_message(tmp_path: Path, venv_small: Path) -> None:
    """``raise ConnectionError("cannot reach " + db_url + " with key " + api_key)`` with ``-p api_key
    sk-ERRKEY-4455 -p db_url https://bob:ErrPassw0rd77@db.example.com/x``: exit 5, and the key and the password
    nowhere in clear (console line, tag mlops_kit.error_value, the manifest, the notebook, its HTML, the store)."""
    nb = _notebook(tmp_path / "nb.ipynb", 'raise ConnectionError("cannot reach " + db_url + " with key " + api_key)')
    output = tmp_path / "out" / "nb_out.ipynb"
    with private_mlflow_server(tmp_path / "server") as (uri, _):
        done = run_nb("--venv", str(venv_small), "--notebook", str(nb), "--output", str(output),
                      "-p", "api_key", API_KEY, "-p", "db_url", DB_URL, "--tracking-uri", uri,
                      "--experiment", "errors", cwd=tmp_path)
        assert done.returncode == 5, done.stderr
        server_leaks, runs = _server_leaks(uri, (API_KEY, DB_PASSWORD), tmp_path / "downloaded")
    assert not [s for s in (API_KEY, DB_PASSWORD) if s in done.stdout + done.stderr], done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("error:"))
    assert "ConnectionError: cannot reach https://***@db.example.com/x with key ***" in line
    (stage,) = [r for r in runs if r.data.tags.get("mlops_kit.role") == "stage"]
    assert stage.data.tags["mlops_kit.error_value"] == "cannot reach https://***@db.example.com/x with key ***"
    manifest = json.loads((output.parent / "nb_out.mlops_run.json").read_text(encoding="utf-8"))
    assert manifest["failure"]["error_value"] == "cannot reach https://***@db.example.com/x with key ***"
    error = [o for c in nbformat.read(str(output), as_version=4).cells for o in c.get("outputs", [])
             if o.output_type == "error"]
    assert error and error[0].evalue == "cannot reach https://***@db.example.com/x with key ***"
    assert not server_leaks, server_leaks
    assert not _leaks((API_KEY, DB_PASSWORD), tmp_path / "out", tmp_path / "server", venv_small / "audit")


PRINTS = (
    "import os, sys\n"
    "from IPython.display import HTML, display\n"
    "print('key:', api_key)\n"  # a secret-named parameter printed alone
    "print('password alone:', db_url.split(':')[2].split('@')[0])\n"  # a URL's password, cut out of it
    "print('inside a word: xx' + api_key + 'yy')\n"
    "print('from a list:', cfg['creds'][0], 'and a mapping:', cfg['vault']['pw'])\n"
    "print('from the params file:', file_token)\n"
    "print('a default of the parameters cell:', dev_token)\n"
    "print('from the environment:', os.environ['DB_PASSWORD'], os.environ['PGPASSWORD'])\n"
    "print('to stderr', api_key, file=sys.stderr)\n"
    "display(HTML('<b>' + api_key + '</b>'))\n"
    "import subprocess\n"
    "subprocess.run([sys.executable, '-c', 'import sys; print(sys.argv[1])', 'child:' + api_key])\n"  # fd 1, not sys.stdout
    "os.write(2, ('fd2:' + api_key + '\\n').encode())\n"
    "print(('x' * 99 + '\\n') * 40000 + 'at the end of 4 MB: ' + api_key)\n"  # a huge output
    "api_key  # the cell's result\n"
)


def test_issue_17_2_values_the_notebook_prints(tmp_path: Path, venv_small: Path) -> None:
    """Every output, error and traceback of the executed notebook and its HTML, masked by exact value, and the
    ``--log-output`` stream too: a secret-named -p value, a URL's password printed alone, a secret inside a longer
    word, in a -p list and mapping, in the params file, in GoCD's secure variables (the job's environment), in a
    4 MB output; the default store (SQLite file, its artifact folder, the store served to the kernel and its log)."""
    secrets = (API_KEY, DB_PASSWORD, "listSecret-1", "mapSecret-2", "fileToken-3", "envSecret-4", "pgSecret-5",
               "devToken-6")
    nb = _notebook(tmp_path / "prints.ipynb", PRINTS, "# logs with mlflow (the store is served to the kernel)\n"
                   "raise ValueError(f'bad key {api_key!r}')",
                   parameters='api_key = ""\ndb_url = ""\ncfg = {}\nfile_token = ""\ndev_token = "devToken-6"\n')
    params_file = tmp_path / "params.yaml"
    params_file.write_text("file_token: fileToken-3\n", encoding="utf-8")
    output = tmp_path / "out" / "prints_out.ipynb"
    done = run_nb("--venv", str(venv_small), "--notebook", str(nb), "--output", str(output), "--log-output",
                  "--params-file", str(params_file), "-p", "api_key", API_KEY, "-p", "db_url", DB_URL,
                  "-p", "cfg", '{"creds": [listSecret-1], "vault": {"pw": mapSecret-2}}', cwd=tmp_path,
                  env=env_with(DB_PASSWORD="envSecret-4", PGPASSWORD="pgSecret-5"), timeout=600)
    assert done.returncode == 5, done.stderr[-3000:]
    executed = nbformat.read(str(output), as_version=4)
    text = json.dumps(executed)
    console = (done.stdout + done.stderr).splitlines()
    assert not [line for line in console if any(s in line for s in secrets)]
    assert "key: ***" in done.stdout and "inside a word: xx***yy" in done.stdout, "--log-output streams it masked"
    assert "at the end of 4 MB: ***" in done.stdout
    assert "child:***" in done.stdout + text and "fd2:***" in done.stderr + text, "the kernel's own fds, relayed"
    for shown in ("key: ***", "password alone: ***", "from a list: *** and a mapping: ***",
                  "from the params file: ***", "a default of the parameters cell: ***", "from the environment: *** ***", "to stderr ***", "<b>***</b>",
                  "at the end of 4 MB: ***", "bad key '***'"):
        assert shown in text, shown
    assert output.with_suffix(".html").is_file()
    written = _leaks(secrets, tmp_path / "out", tmp_path / "mlruns", venv_small / "audit")
    assert (tmp_path / "mlflow.db").is_file() and not _leaks(secrets, tmp_path / "mlflow.db"), "SQLite file bytes"
    assert not written, written
    assert not [p for p in tmp_path.iterdir() if p.is_file() and p.name not in ("prints.ipynb", "params.yaml",
                                                                                 "mlflow.db", "mlflow.db.mlops_kit.lock")]


def test_a_replay_given_the_secret_again_writes_it_nowhere(tmp_path: Path, venv_small: Path) -> None:
    """The record masks the key; the replay gets it again with -p: its working folder, replay venv's audit files,
    report and replay run hold it nowhere either (nor the store's database file bytes and artifacts)."""
    nb = _notebook(tmp_path / "keyed.ipynb", "import json\nprint('using', api_key, dev_token)\n"
                   "json.dump({'answer': 42}, open(output_dir + '/metrics.json', 'w'))",
                   parameters='api_key = ""\noutput_dir = "."\ndev_token = "devToken-6"  # a default: a secret too\n')
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    done = run_nb("--venv", str(venv_small), "--notebook", str(nb), "--output", str(tmp_path / "out" / "k.ipynb"),
                  "-p", "api_key", API_KEY, "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = json.loads((tmp_path / "out" / "k.mlops_run.json").read_text(encoding="utf-8"))["run_id"]
    replay = ("replay_run.py", run_id, "--tracking-uri", uri, "--workdir", str(tmp_path / "replay"),
              "--venv-root", str(tmp_path / "replay venvs"), "-p", "api_key", API_KEY, "--log-output")
    refused = run_script(*replay, cwd=tmp_path)  # the source copy masks the default: the replay must be given it
    assert refused.returncode == 2 and "-p dev_token VALUE" in refused.stderr, refused.stderr
    replayed = run_script(*replay, "-p", "dev_token", "devToken-6", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
    assert "using *** ***" in replayed.stdout and API_KEY not in replayed.stdout + replayed.stderr
    assert not _leaks((API_KEY, "devToken-6"), tmp_path / "replay", tmp_path / "replay venvs", tmp_path / "mlruns",
                      tmp_path / "mlflow.db", tmp_path / "out")


def test_issue_17_4_parameters_named_auth_and_pw_are_secret(tmp_path: Path, venv_small: Path) -> None:
    """``-p auth … -p pw …`` (and a ``key``, a ``dsn``): logged as ``***``, masked wherever printed; ``auth_type`` and
    ``keyword`` are not secrets and are logged as given."""
    secrets = ("authValue-7", "pwValue-8", "keyValue-9", "dsnValue-10")
    nb = _notebook(tmp_path / "auth.ipynb", "print(auth, pw, key, dsn, auth_type, keyword)",
                   parameters="".join(f'{n} = ""\n' for n in ("auth", "pw", "key", "dsn", "auth_type", "keyword")))
    with private_mlflow_server(tmp_path / "server") as (uri, _):
        done = run_nb("--venv", str(venv_small), "--notebook", str(nb), "--output", str(tmp_path / "out" / "a.ipynb"),
                      "-p", "auth", secrets[0], "-p", "pw", secrets[1], "-p", "key", secrets[2], "-p", "dsn",
                      secrets[3], "-p", "auth_type", "oauth-basic", "-p", "keyword", "churn-model", "--log-output",
                      "--tracking-uri", uri, "--experiment", "names", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        server_leaks, runs = _server_leaks(uri, secrets, tmp_path / "downloaded")
    assert "*** *** *** *** oauth-basic churn-model" in done.stdout, done.stdout[-2000:]
    (stage,) = [r for r in runs if r.data.tags.get("mlops_kit.role") == "stage"]
    assert {k: stage.data.params[k] for k in ("auth", "pw", "key", "dsn", "auth_type", "keyword")} == {
        "auth": "***", "pw": "***", "key": "***", "dsn": "***", "auth_type": "oauth-basic", "keyword": "churn-model"}
    assert not [s for s in secrets if s in done.stdout + done.stderr]
    assert not server_leaks, server_leaks
    assert not _leaks(secrets, tmp_path / "out", tmp_path / "server", venv_small / "audit")
