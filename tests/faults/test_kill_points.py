"""kill -9 anywhere: the trainer and the CLI killed at named points ($BTTUI_FAULT), then recovered by resume.

Each trainer scenario is a real `python -m bttui.train` launched through
bttui.runs.launch with BTTUI_FAULT set; it must die by SIGKILL at that point.
Then: the store says `crashed`, every complete checkpoint loads with
torch.load(weights_only=True), the resumed trainer completes the run with step
numbers continuing from its checkpoint (and the repeated steps reproduce the
lost ones' losses), the event log parses with at most the torn line skipped,
no step/epoch/cell event is missing, and the live SQLite index equals one rebuilt
from the run folders, after the crash and after the resume.

The scenarios run two at a time in one module fixture (each process uses one
thread); the tests then assert per scenario.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import faultkit
from faultkit import FIGURES, KILL_RESULTS

SIGKILLED = -9

# (scenario id, $BTTUI_FAULT). Hits: events 1-4 are config, command, device log, stage_start;
# each pretraining epoch is 2 steps; the only cell is linear (SGD readout), 2 epochs.
TRAINER_SCENARIOS = [
    ("atomic.temp_written", "atomic.temp_written@3"),  # a status.json write, temp file fsynced
    ("atomic.replaced", "atomic.replaced@2"),
    ("events.torn", "events.torn@8"),  # half of the epoch-1 checkpoint event
    ("events.written", "events.written@10"),
    ("runner.started", "runner.started"),
    ("runner.summary.before", "runner.summary.before@1"),  # pretraining done, summary not yet written
    ("runner.summary.after", "runner.summary.after@2"),  # the cell's result in summary.json
    ("runner.cell.recorded", "runner.cell.recorded"),
    ("runner.final_status", "runner.final_status"),
    ("pretrain.step.after_backward", "pretrain.step.after_backward@3"),  # first step of epoch 2
    ("pretrain.epoch.end", "pretrain.epoch.end@2"),
    ("pretrain.checkpoint.temp_written", "pretrain.checkpoint.temp_written@2"),  # epoch-2 periodic
    ("pretrain.checkpoint.temp_written/final", "pretrain.checkpoint.temp_written@3"),  # pretrain_final.pt
    ("pretrain.checkpoint.saved", "pretrain.checkpoint.saved@1"),
    ("pretrain.final.saved", "pretrain.final.saved"),
    ("finetune.step.after_backward", "finetune.step.after_backward@2"),
    ("finetune.epoch", "finetune.epoch@1"),
    ("data.cache.temp_written", "data.cache.temp_written@1"),
]
PRETRAIN_EPOCHS = 2

def _check_events(events_path: Path) -> dict:
    log = faultkit_read(events_path)
    events = log.events
    segments = faultkit.split_segments(events)
    out: dict = {"torn": log.torn, "partial": log.partial, "segments": len(segments)}
    stage_starts = [e for e in events if e.get("type") == "stage_start" and e.get("stage") == "pretrain"]
    total = stage_starts[0]["steps"] if stage_starts else None
    out["total_steps"] = total
    steps_all = [e["step"] for e in events if e.get("type") == "step"]
    out["missing_steps"] = sorted(set(range(1, (total or 0) + 1)) - set(steps_all))
    epochs_all = {e["epoch"] for e in events if e.get("type") == "epoch"}
    out["missing_epochs"] = sorted(set(range(1, PRETRAIN_EPOCHS + 1)) - epochs_all)
    out["cell_ends"] = sum(1 for e in events if e.get("type") == "cell_end")
    out["cell_ends_completed"] = sum(1 for e in events if e.get("type") == "cell_end"
                                     and (e.get("result") or {}).get("status") == "completed")
    finals = [e for e in events if e.get("type") == "status"]
    out["final_event"] = finals[-1]["status"] if finals else None
    # The resumed process: where its pretraining restarted and whether its steps run on without a gap.
    last = segments[-1] if segments else []
    resumed = [e for e in last if e.get("type") == "stage_start" and e.get("stage") == "pretrain"]
    out["resumed_start_step"] = resumed[0].get("start_step") if resumed else None
    resumed_steps = [e["step"] for e in last if e.get("type") == "step"]
    if resumed:
        s0 = resumed[0]["start_step"]
        out["steps_continue"] = resumed_steps == list(range(s0 + 1, (total or 0) + 1))
    else:
        out["steps_continue"] = not resumed_steps
    # Steps done twice (lost with the crash, redone from the checkpoint) must reproduce their loss.
    before = {e["step"]: e["loss"] for seg in segments[:-1] for e in seg if e.get("type") == "step"}
    after = {e["step"]: e["loss"] for e in last if e.get("type") == "step"}
    out["repeated_steps"] = sorted(set(before) & set(after))
    out["loss_mismatch"] = [s for s in out["repeated_steps"] if abs(before[s] - after[s]) > 1e-4 * max(1.0, abs(before[s]))]
    return out


def faultkit_read(path: Path):
    from bttui.runs.events import read_events

    return read_events(path)


def temp_files(store: Path) -> list[str]:
    """Every temp file or folder a killed write can leave in a store (index databases excluded), store-relative."""
    found = []
    for path in store.rglob(".*"):
        rel = path.relative_to(store)
        if rel.parts[0] == ".bttui":
            continue
        if path.name.startswith((".tmp-", ".deleting-")) or ".tmp" in path.name:
            found.append(rel.as_posix())
    return sorted(found)


def gc_temps_later(store: Path, hours: float = 2.0) -> list[str]:
    """What `bttui gc` removes as temp leftovers when it runs `hours` from now (old checkpoints left alone)."""
    from bttui.config.settings import MachineSettings
    from bttui.runs import disk
    from bttui.runs.store import Store

    plan = [r for r in disk.gc_plan(Store(store), MachineSettings(), now=time.time() + hours * 3600)
            if r.path.name.startswith(".")]
    disk.apply(plan)
    return sorted(r.path.relative_to(store).as_posix() for r in plan)


def run_trainer_scenario(sid: str, spec: str, mimeta_root: Path, base: Path) -> dict:
    """Crash one tiny run at `spec`, look at what is left, resume it, look again."""
    from bttui.runs.store import Store

    work = base / sid.replace("/", "_")
    store = work / "store"
    env = faultkit.base_env(work)
    paths = faultkit.create_run(store, faultkit.tiny_toml(mimeta_root), work / "cfg")
    run_id = paths.dir.name
    res: dict = {"spec": spec, "run_id": run_id}
    faultkit.live_rows(store)  # the index knows the run before the crash, as a TUI or `ls` would

    t0 = time.monotonic()
    res["crash_rc"] = faultkit.run_trainer(paths, {**env, "BTTUI_FAULT": spec})
    res["t_crash"] = round(time.monotonic() - t0, 2)
    t0_checks = time.monotonic()
    record = Store(store).get(run_id)
    res["crash_status"], res["crash_reason"] = record.status, record.reason
    crash_log = faultkit_read(paths.events)
    res["crash_partial"], res["crash_torn"] = crash_log.partial, crash_log.torn
    res["checkpoints_after_crash"] = faultkit.load_checkpoints(paths.checkpoints)
    res["temps_after_crash"] = temp_files(store)
    res["newest_after_crash"] = faultkit.newest_checkpoint(paths.checkpoints)
    res["index_equal_after_crash"] = faultkit.live_rows(store) == faultkit.rebuilt_rows(store, work / "scratch.sqlite")

    t0 = time.monotonic()
    res["t_checks"] = round(t0 - t0_checks, 2)
    res["resume_rc"] = faultkit.resume_and_wait(store, run_id, env)
    res["t_resume"] = round(time.monotonic() - t0, 2)
    record = Store(store).get(run_id)
    res["final_status"], res["final_reason"] = record.status, record.reason
    summary = record.summary()
    res["cells_completed"] = sum(1 for r in summary.get("results", []) if r.get("status") == "completed")
    res["pretrain_status"] = (summary.get("pretrain") or {}).get("status")
    res["pretrain_steps"] = (summary.get("pretrain") or {}).get("steps")
    res["events"] = _check_events(paths.events)
    res["checkpoints_final"] = faultkit.load_checkpoints(paths.checkpoints)
    res["stale_temp_files"] = sorted(p.name for p in paths.checkpoints.glob(".*.tmp"))  # resume removes these
    res["temps_after_resume"] = temp_files(store)
    res["gc_removed_temps"] = gc_temps_later(store)  # the rest are young; gc takes them once they are old
    res["temps_after_gc"] = temp_files(store)
    live = faultkit.live_rows(store)
    res["index_equal_after_resume"] = live == faultkit.rebuilt_rows(store, work / "scratch.sqlite")
    res["index_status"] = [r["status"] for r in live]
    res["log_tail"] = paths.log.read_text(errors="replace")[-1500:]
    # 3 checkpoints of 130 MB each per scenario: free the disk once the facts are gathered.
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
    shutil.rmtree(store / "cache", ignore_errors=True)
    return res


@pytest.fixture(scope="module")
def trainer_results(mimeta_root, tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("kill")

    def one(item: tuple[str, str]) -> tuple[str, dict]:
        sid, spec = item
        try:
            return sid, run_trainer_scenario(sid, spec, mimeta_root, base)
        except Exception:  # noqa: BLE001 - reported by the scenario's own test
            return sid, {"spec": spec, "error": traceback.format_exc()}

    only = os.environ.get("BTTUI_FAULT_ONLY")  # debugging: a comma-separated subset of scenario ids
    chosen = [s for s in TRAINER_SCENARIOS if not only or s[0] in only.split(",")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(one, chosen))
    for sid, res in results.items():
        KILL_RESULTS[sid] = {k: v for k, v in res.items() if k != "log_tail"}
        FIGURES["kill_scenarios"] += 1
        ev = res.get("events", {})
        lost = len(ev.get("missing_steps", [0])) + len(ev.get("missing_epochs", [0])) \
            + (1 - min(1, ev.get("cell_ends", 0))) + (0 if ev.get("final_event") == "completed" else 1)
        FIGURES["events_lost"] += lost if "error" not in res else 1
        FIGURES["runs_recovered"] += int(res.get("final_status") == "completed")
        FIGURES["torn_lines_skipped"] += ev.get("torn", 0)
    return results


@pytest.mark.parametrize("sid", [s for s, _ in TRAINER_SCENARIOS])
def test_trainer_killed_at_point_recovers(sid, trainer_results):
    res = trainer_results[sid]
    assert "error" not in res, res.get("error")
    context = json.dumps({k: v for k, v in res.items() if k != "log_tail"}, indent=1, default=str) + res["log_tail"]
    # the fault fired where it was asked to, and the store sees the dead trainer
    assert res["crash_rc"] == SIGKILLED, context
    assert res["crash_status"] == "crashed", context
    assert res["crash_reason"] and "gone" in res["crash_reason"], context
    # every complete checkpoint loads with weights_only=True (temp files never look complete)
    assert all(err is None for err in res["checkpoints_after_crash"].values()), context
    assert res["index_equal_after_crash"], context
    # a torn line is only ever the last one, and only the torn-write point leaves one
    if sid == "events.torn":
        assert res["crash_partial"], context
    else:
        assert not res["crash_partial"] and res["crash_torn"] == 0, context
    # resume completes the run, numbering continuing from the checkpoint
    assert res["resume_rc"] == 0, context
    assert res["final_status"] == "completed" and res["final_reason"] is None, context
    assert res["pretrain_status"] == "completed" and res["cells_completed"] == 1, context
    ev = res["events"]
    assert ev["total_steps"] and res["pretrain_steps"] == ev["total_steps"], context
    assert ev["steps_continue"], context
    assert ev["missing_steps"] == [] and ev["missing_epochs"] == [], context
    # exactly one cell_end for the one cell: none lost (runner.summary.after replays it), none doubled
    assert ev["cell_ends"] == 1 and ev["cell_ends_completed"] == 1, context
    assert ev["final_event"] == "completed", context
    assert ev["loss_mismatch"] == [], context
    assert ev["torn"] == (1 if sid == "events.torn" else 0) and not ev["partial"], context
    assert all(err is None for err in res["checkpoints_final"].values()), context
    assert {"pretrain_final.pt", "pretrain_epoch0002.pt"} <= set(res["checkpoints_final"]), context
    assert res["index_equal_after_resume"] and res["index_status"] == ["completed"], context
    # temp files of killed writes: the resumed trainer removes its dead checkpoint temps at once, gc the rest
    assert res["stale_temp_files"] == [] and not any("checkpoints/" in t for t in res["temps_after_resume"]), context
    assert res["temps_after_gc"] == [], context


def test_kills_mid_write_leave_temps_that_resume_and_gc_remove(trainer_results):
    """The scenarios that kill a write in flight do leave a temp file (so the cleanup above is exercised)."""
    def crash_temps(sid: str) -> list[str]:
        return trainer_results[sid].get("temps_after_crash", [])

    assert any(t.endswith(".tmp") and "/checkpoints/.pretrain_epoch0002.pt." in t
               for t in crash_temps("pretrain.checkpoint.temp_written")), crash_temps("pretrain.checkpoint.temp_written")
    assert any("/.status.json." in t for t in crash_temps("atomic.temp_written")), crash_temps("atomic.temp_written")
    assert any(t.startswith("cache/.tmp-") for t in crash_temps("data.cache.temp_written")), \
        crash_temps("data.cache.temp_written")
    assert any(t.startswith("cache/.tmp-") for t in trainer_results["data.cache.temp_written"]["gc_removed_temps"])


def test_resume_restarts_from_the_newest_complete_checkpoint(trainer_results):
    """Where each crash point must make the resumed pretraining start: the last checkpoint written before it."""
    expected = {
        "pretrain.step.after_backward": 2,  # killed in epoch 2: resume from epoch 1 (step 2)
        "pretrain.epoch.end": 2,  # epoch 2 done but not checkpointed
        "pretrain.checkpoint.temp_written": 2,  # epoch-2 checkpoint never got its name
        "pretrain.checkpoint.temp_written/final": 4,  # epoch-2 checkpoint complete, final not
        "events.torn": 2,  # the checkpoint is complete even though its event is torn
    }
    got = {sid: trainer_results[sid].get("events", {}).get("resumed_start_step") for sid in expected}
    assert got == expected
    # once pretraining completed, a resume does not pretrain again
    for sid in ("runner.summary.after", "runner.cell.recorded", "runner.final_status", "finetune.epoch"):
        assert trainer_results[sid]["events"]["resumed_start_step"] is None, sid
    # repeated steps exist where work was lost, and reproduced their losses (asserted per scenario)
    assert trainer_results["pretrain.epoch.end"]["events"]["repeated_steps"] == [3, 4]


# ----------------------------------------------------------------- CLI processes killed mid-update


def _make_runs(store: Path, mimeta_root: Path, work: Path, n: int) -> list[str]:
    ids = []
    for i in range(n):
        paths = faultkit.create_run(store, faultkit.tiny_toml(mimeta_root, name=f"cli-{i}"), work / f"cfg{i}")
        ids.append(paths.dir.name)
    return ids


def _set_status(store: Path, run_id: str, **fields) -> None:
    from bttui.runs.layout import RunPaths
    from bttui.runs.status import StatusFile

    StatusFile(RunPaths(store / run_id)).update(**fields)


def _ls(store: Path, env: dict) -> tuple[list[dict], str]:
    proc = faultkit.bttui(["--store", store, "ls", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def _cli_counts(passed: bool) -> None:
    FIGURES["kill_scenarios"] += 1
    FIGURES["runs_recovered"] += int(passed)


def test_ls_killed_mid_index_transaction(tmp_path, mimeta_root):
    store, env = tmp_path / "store", faultkit.base_env(tmp_path)
    ids = _make_runs(store, mimeta_root, tmp_path, 3)
    first, _ = _ls(store, env)
    assert [r["status"] for r in first] == ["queued"] * 3
    # the next refresh has work to do: a status change and a new run
    _set_status(store, ids[0], status="completed", ended=1.0)
    ids += _make_runs(store, mimeta_root, tmp_path / "more", 1)
    killed = faultkit.bttui(["--store", store, "ls", "--json"], {**env, "BTTUI_FAULT": "index.refresh.mid_transaction"})
    assert killed.returncode == SIGKILLED, killed.stderr
    rows, err = _ls(store, env)
    assert "locked" not in err.lower() and "Traceback" not in err
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert {r["id"]: r["status"] for r in rows}[ids[0]] == "completed"
    assert faultkit.live_rows(store) == faultkit.rebuilt_rows(store, tmp_path / "scratch.sqlite")
    _cli_counts(True)


def test_index_rebuild_killed_after_clearing(tmp_path, mimeta_root):
    store, env = tmp_path / "store", faultkit.base_env(tmp_path)
    ids = _make_runs(store, mimeta_root, tmp_path, 2)
    _ls(store, env)
    killed = faultkit.bttui(["--store", store, "index", "rebuild"], {**env, "BTTUI_FAULT": "index.rebuild.cleared"})
    assert killed.returncode == SIGKILLED, killed.stderr
    rows, err = _ls(store, env)
    assert sorted(r["id"] for r in rows) == sorted(ids) and "locked" not in err.lower()
    again = faultkit.bttui(["--store", store, "index", "rebuild"], env)
    assert again.returncode == 0 and "indexed 2 runs" in again.stdout, again.stderr
    assert faultkit.live_rows(store) == faultkit.rebuilt_rows(store, tmp_path / "scratch.sqlite")
    _cli_counts(True)


@pytest.mark.parametrize("spec", ["store.create_run.tmp_built", "atomic.temp_written@1"])
def test_run_command_killed_while_creating_the_run(tmp_path, mimeta_root, spec):
    """`bttui run` dies while building the run folder: no run (half-made or not) appears anywhere."""
    store, env = tmp_path / "store", faultkit.base_env(tmp_path)
    config = tmp_path / "exp.toml"
    config.write_text(faultkit.tiny_toml(mimeta_root))
    killed = faultkit.bttui(["--store", store, "run", config, "--detach"], {**env, "BTTUI_FAULT": spec})
    assert killed.returncode == SIGKILLED, killed.stdout + killed.stderr
    leftovers = [p.name for p in store.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1  # the half-built folder stays hidden ...
    rows, err = _ls(store, env)
    assert rows == [] and "Traceback" not in err  # ... and is never listed as a run
    from bttui.runs import disk
    from bttui.runs.store import Store

    assert Store(store).list_runs() == []
    # gc leaves a young one alone (it may be a run being made right now) and removes it once it is old
    assert [r.path.name for r in disk.store_temp_removals(store)] == []
    assert gc_temps_later(store) == leftovers
    assert not any(p.name.startswith(".tmp-") for p in store.iterdir())
    _cli_counts(True)


def test_run_command_killed_after_spawning_the_trainer(tmp_path, mimeta_root):
    """`bttui run --detach` killed right after the spawn: the detached trainer lives on and completes the run.

    Also the permissions check: everything the CLI and trainer create honours the
    user's umask (027 here) and nothing is world-writable.
    """
    store, env = tmp_path / "store", faultkit.base_env(tmp_path)
    config = tmp_path / "exp.toml"
    config.write_text(faultkit.tiny_toml(mimeta_root))
    killed = faultkit.bttui(["--store", store, "run", config, "--detach"], {**env, "BTTUI_FAULT": "launch.spawned"},
                            umask=0o027)
    assert killed.returncode == SIGKILLED, killed.stdout + killed.stderr
    from bttui.runs.store import Store

    runs = Store(store).list_runs()
    assert len(runs) == 1
    assert faultkit.wait_final(store, runs[0].id, timeout=150) == "completed"
    log = faultkit_read(runs[0].paths.events)
    assert log.torn == 0 and any(e["type"] == "cell_end" for e in log.events)
    loose = []  # walked before this test process (umask 022) adds its own index files
    for path in [store, *store.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if mode & 0o007:  # umask 027: no permission bits at all for others
            loose.append(f"{path.relative_to(store)} {stat.filemode(mode)}")
    assert loose == []
    assert faultkit.live_rows(store) == faultkit.rebuilt_rows(store, tmp_path / "scratch.sqlite")
    _cli_counts(True)


def test_suite_covers_at_least_twenty_points():
    from bttui.faults import POINTS

    tried = {spec.split("@")[0] for _, spec in TRAINER_SCENARIOS}
    tried |= {"index.refresh.mid_transaction", "index.rebuild.cleared", "store.create_run.tmp_built", "launch.spawned",
              "queue.drain.spawned", "queue.add.mid_transaction"}
    assert tried <= set(POINTS)
    FIGURES["kill_points"] = len(tried)
    # every point named in bttui.faults sits in the code exactly where docs/reliability.md says
    import re

    import bttui

    sources = "\n".join(p.read_text() for p in Path(bttui.__file__).parent.rglob("*.py") if p.name != "faults.py")
    placed = set(re.findall(r'fault_(?:point|torn_write)\("([a-z._]+)"', sources))
    assert placed == set(POINTS)
    assert len(tried) >= 20


# ----------------------------------------------------------------- the run queue


def _queue_ids(store: Path) -> list[str]:
    from bttui.runs.queue import Queue

    return [e.run_id for e in Queue(store).entries()]


def test_run_command_killed_after_the_queue_spawned_the_trainer(tmp_path, mimeta_root):
    """Killed between the spawn and the queue row's deletion: the run starts exactly once and the row goes away."""
    store, env = tmp_path / "store", faultkit.base_env(tmp_path)
    config = tmp_path / "exp.toml"
    config.write_text(faultkit.tiny_toml(mimeta_root))
    killed = faultkit.bttui(["--store", store, "run", config, "--detach"], {**env, "BTTUI_FAULT": "queue.drain.spawned"})
    assert killed.returncode == SIGKILLED, killed.stdout + killed.stderr
    from bttui.runs.store import Store

    (run,) = Store(store).list_runs()
    assert faultkit.wait_final(store, run.id, timeout=150) == "completed"
    log = faultkit_read(run.paths.events)
    assert sum(1 for e in log.events if e["type"] == "command") == 1  # one trainer, not two
    assert run.paths.log.read_text().count("bttui launch") == 1
    listing = faultkit.bttui(["--store", store, "queue"], env)
    assert listing.returncode == 0 and "locked" not in listing.stderr.lower(), listing.stderr
    assert _queue_ids(store) == []  # the finished trainer's exit hook drained the stale row
    assert faultkit.live_rows(store) == faultkit.rebuilt_rows(store, tmp_path / "scratch.sqlite")
    _cli_counts(True)


def test_run_command_killed_mid_queue_insert(tmp_path, mimeta_root):
    """Killed inside the queue transaction: the insert rolls back; the run must still be startable, not stranded."""
    store, env = tmp_path / "store", faultkit.base_env(tmp_path)
    config = tmp_path / "exp.toml"
    config.write_text(faultkit.tiny_toml(mimeta_root))
    killed = faultkit.bttui(["--store", store, "run", config, "--detach"],
                            {**env, "BTTUI_FAULT": "queue.add.mid_transaction"})
    assert killed.returncode == SIGKILLED, killed.stdout + killed.stderr
    from bttui.runs.store import Store

    (run,) = Store(store).list_runs()
    assert _queue_ids(store) == []  # rolled back, and the database is usable (not locked, not corrupt)
    rows, err = _ls(store, env)
    assert [r["id"] for r in rows] == [run.id] and "locked" not in err.lower()
    FIGURES["kill_scenarios"] += 1
    # a run created but never queued (killed between create_run and the queue insert) is not stranded:
    # `bttui resume` re-queues and starts it (and a drain adopts it once it is a minute old, tested below).
    resumed = faultkit.bttui(["--store", store, "resume", run.id], env, timeout=150)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert Store(store).get(run.id).status == "completed"
    log = faultkit_read(run.paths.events)
    assert sum(1 for e in log.events if e["type"] == "command") == 1 and log.torn == 0
    assert _queue_ids(store) == []
    FIGURES["runs_recovered"] += 1


def test_queue_drain_adopts_stranded_runs(tmp_path, mimeta_root):
    """`queued`, no pid, no queue row, a minute old, made on this host: the next drain queues it (once)."""
    from bttui.runs import control, queue
    from bttui.runs.store import Store

    store = tmp_path / "store"
    stranded, fresh, foreign, in_queue = _make_runs(store, mimeta_root, tmp_path, 4)
    _set_status(store, foreign, host="some-other-host")  # a store shared over NFS: its queue is on that host
    queue.Queue(store).add(in_queue)
    old = time.time() - 2 * queue.STRANDED_AFTER_S
    for run_id in (stranded, foreign, in_queue):
        os.utime(store / run_id / "status.json", (old, old))
    assert control.is_stranded(Store(store).get(stranded)) and control.is_stranded(Store(store).get(fresh))
    assert not control.is_stranded(Store(store).get(in_queue)) and not control.is_stranded(Store(store).get(foreign))
    assert queue.adopt_stranded(Store(store)) == [stranded]  # the young one may still be being queued
    assert queue.adopt_stranded(Store(store)) == []  # once only
    assert _queue_ids(store) == [in_queue, stranded]
    later = time.time() + 2 * queue.STRANDED_AFTER_S
    assert queue.adopt_stranded(Store(store), now=later) == [fresh]
    # a queued run that sits in the queue is still refused by resume (it starts when its turn comes)
    with pytest.raises(Exception, match="already queued"):
        control.prepare_resume(Store(store).get(in_queue))
