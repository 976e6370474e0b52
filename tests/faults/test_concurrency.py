"""Many writers and readers at once for a bounded time: no lost or duplicated events, no 'database is locked'.

8 writer processes (one per run, like trainers) append events to their run's
events.jsonl and to one shared file, and rewrite status.json; meanwhile a tailer
reads every log incrementally (as the TUI does), an indexer refreshes and
rebuilds the SQLite index in a loop, and `bttui ls --json` runs again and again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import faultkit
from faultkit import FIGURES

WRITERS = 8
SECONDS = 8.0
WORKER = Path(__file__).resolve().parent / "concurrency_worker.py"


def _spawn(args: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_writers_and_readers_at_once(tmp_path, mimeta_root):
    from bttui.runs.events import read_events
    from bttui.runs.store import Store

    store, env = tmp_path / "store", faultkit.base_env(tmp_path)
    ids = [faultkit.create_run(store, faultkit.tiny_toml(mimeta_root, name=f"writer-{i}"), tmp_path / f"c{i}").dir.name
           for i in range(WRITERS)]
    shared, done = tmp_path / "shared.jsonl", tmp_path / "done"
    readers = [_spawn(["tailer", store, done], env), _spawn(["indexer", store, done], env)]
    t0 = time.monotonic()
    writers = [_spawn(["writer", store, run_id, i, SECONDS, shared], env) for i, run_id in enumerate(ids)]
    ls_calls, ls_problems, statuses_seen = 0, [], Counter()
    while any(w.poll() is None for w in writers):
        proc = faultkit.bttui(["--store", store, "ls", "--json"], env)
        ls_calls += 1
        if proc.returncode != 0 or "locked" in (proc.stdout + proc.stderr).lower():
            ls_problems.append((proc.returncode, proc.stderr[-500:]))
        else:
            statuses_seen.update(r["status"] for r in json.loads(proc.stdout))
    wrote = {r["writer"]: r["events"] for r in (_result(w) for w in writers)}
    elapsed = time.monotonic() - t0
    done.touch()
    tail, index = (_result(r) for r in readers)

    lost = duplicated = total = 0
    for i, run_id in enumerate(ids):
        log = read_events(store / run_id / "events.jsonl")
        seqs = [e["seq"] for e in log.events if e.get("type") == "step"]
        assert log.torn == 0 and not log.partial
        expected = list(range(wrote[i]))
        total += wrote[i]
        lost += len(set(expected) - set(seqs))
        duplicated += len(seqs) - len(set(seqs))
        assert seqs == expected, f"run {run_id}: events lost or out of order"
        assert tail["seen"][run_id] == expected, f"the tailer's incremental reads of {run_id} differ from the file"
    shared_log = read_events(shared)
    per_writer = Counter((e["writer"], e["seq"]) for e in shared_log.events)
    assert shared_log.torn == 0 and not shared_log.partial
    assert len(per_writer) == total and set(per_writer.values()) == {1}, "interleaved appends lost or doubled a line"
    assert tail["torn"] == 0

    assert index["n_errors"] == 0, index["errors"]
    assert ls_problems == [] and ls_calls >= 3
    assert statuses_seen["running"] > 0  # the readers really ran while the writers did
    assert {r.status for r in Store(store).list_runs()} == {"completed"}
    assert faultkit.live_rows(store) == faultkit.rebuilt_rows(store, tmp_path / "scratch.sqlite")
    assert min(wrote.values()) > 20

    FIGURES["concurrent_writers"] = WRITERS
    FIGURES["concurrent_seconds"] = round(elapsed, 1)
    FIGURES["concurrent_events"] = 2 * total
    FIGURES["concurrent_lost"] = lost
    FIGURES["concurrent_duplicated"] = duplicated
    FIGURES["concurrent_reader_calls"] = ls_calls + index["calls"] + tail["reads"]
    FIGURES["database_locked"] = sum("locked" in e.lower() for e in index["errors"]) + len(ls_problems)
