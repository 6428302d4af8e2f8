"""Finding a run to reuse (mlops_kit.run.reuse_origin) in a real SQLite store holding 10,000 runs: one tag search,
never a listing of the experiment."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlops_kit.run import lineage, reuse, reuse_origin, store
from mlops_kit.run.store import Target

NUMBERS = b"0.1\n0.2\n"


def _origin(client: MlflowClient, experiment_id: str, key: str, folder: Path) -> str:
    """A run as run_notebook.py logs one: its key tag, lineage record with output hashes, executed notebook,
    outputs."""
    sha = hashlib.sha256(NUMBERS).hexdigest()
    files = [lineage.FileEntry("numbers.txt", len(NUMBERS), sha)]
    record = lineage.LineageRecord("3.12.4", "make.ipynb", None, None, [], None, [], [],
                                   lineage.Outputs("out", lineage.Tree("folder", lineage.folder_digest(files),
                                                                       len(NUMBERS), files)))
    run_id = client.create_run(experiment_id, start_time=1_000, tags={
        reuse.KEY_TAG: key, "mlops_kit.role": "stage", "mlops_kit.stage": "make",
        "mlops_kit.model.version": "3"}).info.run_id
    client.log_text(run_id, json.dumps(record.to_json()), lineage.ARTIFACT)
    client.log_text(run_id, "{}", "make_out.ipynb")
    client.log_text(run_id, NUMBERS.decode(), "outputs/numbers.txt")
    client.log_metric(run_id, "count", 2.0)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _fill(db: Path, like: str, count: int) -> None:
    """``count`` FINISHED runs of the same stage with other keys, newer than ``like``, written straight into the
    store's tables (creating them through MLflow would take minutes)."""
    with sqlite3.connect(db) as con:
        columns = [row[1] for row in con.execute("PRAGMA table_info(runs)")]
        row = dict(zip(columns, con.execute("SELECT * FROM runs WHERE run_uuid = ?", (like,)).fetchone()))
        runs, tags = [], []
        for n in range(count):
            run_id = uuid.uuid4().hex
            runs.append(tuple({**row, "run_uuid": run_id, "start_time": 2_000 + n}[c] for c in columns))
            tags += [(reuse.KEY_TAG, f"other-{n}", run_id), ("mlops_kit.stage", "make", run_id),
                     ("mlops_kit.role", "stage", run_id)]
        con.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * len(columns))})", runs)
        con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tags)


def _key() -> reuse.ReuseKey:
    return reuse.ReuseKey([(2, "c" * 64)], {"seed": 7}, {"lock_sha256": "a" * 64}, "cpython 3.12.4", "linux-x86_64",
                          {})


def test_a_hit_among_10000_runs_is_found_by_tag_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    target = Target(uri, "big", (tmp_path / "mlruns").as_uri())
    client = store.client(uri)
    experiment_id = store.experiment_id(client, target)
    key = _key()
    origin = _origin(client, experiment_id, key.digest, tmp_path)
    _fill(tmp_path / "mlflow.db", origin, 10_000)
    fetched: list[int] = []
    search = type(client).search_runs

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        page = search(self, *args, **kwargs)
        fetched.append(len(page))
        return page

    monkeypatch.setattr(type(client), "search_runs", counting)
    (tmp_path / "staging").mkdir()
    found = reuse_origin.find(uri, target, key, "make", str(tmp_path / "staging"))
    assert found.origin is not None and found.origin.run_id == origin, found.why_not
    assert found.origin.tags == {"mlops_kit.model.version": "3"} and found.origin.metrics == {"count": 2.0}
    assert (tmp_path / "staging" / "outputs" / "numbers.txt").read_bytes() == NUMBERS
    assert sum(fetched) <= 2 * reuse_origin._CANDIDATES, fetched  # the hit, then its replays: never a listing
    fetched.clear()
    other = reuse.ReuseKey(key.cells, {"seed": 8}, key.environment, key.python, key.platform, {})
    (tmp_path / "staging2").mkdir()
    miss = reuse_origin.find(uri, target, other, "make", str(tmp_path / "staging2"))
    assert miss.origin is None and "no readable reuse key" in miss.why_not  # the filler runs hold no artifacts
    assert sum(fetched) <= 2 * reuse_origin._CANDIDATES, fetched
    (tmp_path / "staging3").mkdir()
    quoted = reuse_origin.find(uri, target, other, "it's", str(tmp_path / "staging3"))
    assert quoted.origin is None and "a quote in its name" in quoted.why_not  # --stage is free text
