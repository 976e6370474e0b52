"""SQLite run index: matches the run folders, refreshes incrementally, re-checks liveness, survives corruption."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

from bttui.config.schema import ExperimentConfig, FinetuneConfig, PretrainConfig
from bttui.runs import liveness
from bttui.runs.atomic import write_json_atomic
from bttui.runs.index import COLUMNS, Index
from bttui.runs.status import COMPLETED, CRASHED, FAILED, QUEUED, RUNNING, write_status
from bttui.runs.store import Store


def cfg(name: str) -> ExperimentConfig:
    c = ExperimentConfig(name=name)
    c.data.root = "/nonexistent"
    c.pretrain = PretrainConfig(datasets=["organs_axial", "organs_coronal"])
    c.finetune = FinetuneConfig(datasets=["organs_coronal", "bus"], init=["imagenet"], strategy=["linear"],
                                label_fractions=[1.0], seeds=[0])
    return c


def stable(rows):
    return [{k: v for k, v in row.items() if k != "updated"} for row in rows]


def here(**fields) -> dict:
    return {"host": liveness.hostname(), "boot_id": liveness.boot_id(), **fields}


def test_index_matches_store_and_rebuild(tmp_path):
    store = Store(tmp_path)
    made = [store.create_run(cfg(f"run {i}")) for i in range(3)]
    write_status(made[0], here(status=COMPLETED, stage=None, best_accuracy=0.7))
    write_json_atomic(made[0].summary, {"pretrain": None, "results": [
        {"cell": "a", "test_accuracy": 0.81}, {"cell": "b", "test_accuracy": float("nan")}]})
    write_status(made[1], here(status=RUNNING, stage="pretrain", step=30, steps=120, pid=os.getpid(),
                               pid_start=liveness.process_start_time(os.getpid())))
    index = Index(store)
    rows = index.refresh()
    assert index.path == tmp_path / ".bttui" / "index.sqlite" and index.path.exists()
    assert [r["id"] for r in rows] == [r.id for r in store.list_runs()]
    by_id = {r["id"]: r for r in rows}
    done = by_id[made[0].id]
    assert done["status"] == COMPLETED and done["best_accuracy"] == 0.81 and done["progress"] == 1.0
    assert done["datasets"] == ["organs_axial", "organs_coronal", "bus"]
    assert done["name"] == "run 0" and done["created"].endswith("Z")
    live = by_id[made[1].id]
    assert (live["status"], live["stage"], live["progress"]) == (RUNNING, "pretrain", 0.25)
    assert by_id[made[2].id]["status"] == QUEUED
    assert index.last_changed == {p.id for p in made}
    assert set(rows[0]) == set(COLUMNS)
    # a rebuilt index (and a fresh one on the same file) equals the live one
    assert stable(Index(store).rebuild()) == stable(rows)
    assert stable(index.rows()) == stable(rows)
    mode = sqlite3.connect(index.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    index.close()


def test_refresh_sees_added_changed_and_removed_runs(tmp_path):
    store = Store(tmp_path)
    a = store.create_run(cfg("a"))
    b = store.create_run(cfg("b"))
    index = Index(store)
    assert len(index.refresh()) == 2
    assert index.refresh() and index.last_changed == set()  # nothing changed: nothing re-read
    write_status(a, {"status": FAILED, "reason": "collapse"})
    c = store.create_run(cfg("c"))
    shutil.rmtree(b.dir)
    rows = {r["id"]: r for r in index.refresh()}
    assert set(rows) == {a.id, c.id}
    assert (rows[a.id]["status"], rows[a.id]["reason"]) == (FAILED, "collapse")
    assert index.last_changed == {a.id, b.id, c.id}
    write_json_atomic(a.summary, {"results": [{"test_accuracy": 0.5}]})
    assert {r["id"]: r for r in index.refresh()}[a.id]["best_accuracy"] == 0.5
    assert index.last_changed == {a.id}


def test_running_row_turns_crashed_when_the_process_dies(tmp_path):
    store = Store(tmp_path)
    paths = store.create_run(cfg("live"))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_status(paths, here(status=RUNNING, pid=proc.pid, pid_start=liveness.process_start_time(proc.pid),
                                 heartbeat=0.0))
        index = Index(store)
        assert index.refresh()[0]["status"] == RUNNING
        assert index.rows(status=RUNNING)[0]["id"] == paths.id
    finally:
        proc.kill()
        proc.wait()
    # status.json is unchanged: the refresh must re-check liveness by itself
    row = index.refresh()[0]
    assert row["status"] == CRASHED and "gone" in row["reason"]
    assert index.last_changed == {paths.id}
    assert index.rows(status=RUNNING) == []


def test_corrupt_index_is_replaced(tmp_path):
    store = Store(tmp_path)
    store.create_run(cfg("a"))
    (tmp_path / ".bttui").mkdir()
    (tmp_path / ".bttui" / "index.sqlite").write_bytes(b"this is not sqlite" * 100)
    rows = Index(store).refresh()
    assert [r["name"] for r in rows] == ["a"]
    assert sqlite3.connect(tmp_path / ".bttui" / "index.sqlite").execute("SELECT count(*) FROM runs").fetchone() == (1,)


def test_other_schema_is_replaced(tmp_path):
    store = Store(tmp_path)
    store.create_run(cfg("a"))
    (tmp_path / ".bttui").mkdir()
    conn = sqlite3.connect(tmp_path / ".bttui" / "index.sqlite")
    conn.execute("CREATE TABLE runs (id TEXT)")
    conn.commit()
    conn.close()
    assert [r["name"] for r in Index(store).refresh()] == ["a"]


def test_missing_store_is_empty_and_not_created(tmp_path):
    index = Index(tmp_path / "none")
    assert index.refresh() == [] and index.rows() == [] and index.rebuild() == []
    assert not (tmp_path / "none").exists()


def test_unusable_index_location_falls_back_to_memory(tmp_path):
    # Stands in for a read-only store (root ignores permissions): .bttui cannot be made a folder.
    store = Store(tmp_path)
    store.create_run(cfg("a"))
    (tmp_path / ".bttui").write_text("a file, not a folder")
    index = Index(store)
    assert [r["name"] for r in index.refresh()] == ["a"] and index.in_memory
    assert [r["name"] for r in index.rows(status=QUEUED)] == ["a"]


def test_thousand_runs_and_queries(tmp_path):
    # Plain writes (no fsync) keep making 1000 runs quick; the index only needs the files.
    statuses = [COMPLETED, FAILED, RUNNING, QUEUED]
    for i in range(1000):
        run_dir = tmp_path / f"2024{i // 100 + 1:02d}{i % 28 + 1:02d}-000000-r{i}-{i:04x}"
        run_dir.mkdir()
        (run_dir / "run.json").write_text(json.dumps({"format": 1, "id": run_dir.name, "name": f"r{i}"}))
        st = statuses[i % 4]
        (run_dir / "status.json").write_text(json.dumps({"status": st, "host": "elsewhere", "heartbeat": 1e12}))
    (tmp_path / "cache").mkdir()
    (tmp_path / ".tmp-x").mkdir()
    index = Index(tmp_path)
    rows = index.refresh()
    assert len(rows) == 1000
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert len(index.rows(status=COMPLETED)) == 250
    assert len(index.rows(status=[RUNNING, QUEUED])) == 500
    page = index.rows(limit=10, offset=20)
    assert [r["id"] for r in page] == [r["id"] for r in rows[20:30]]
    assert index.rows(status=[]) == []
    # injection-looking input is only ever a parameter
    assert index.rows(status="x' OR '1'='1") == []
    assert index.refresh() and index.last_changed == set()
