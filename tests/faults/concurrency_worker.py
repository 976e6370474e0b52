"""Worker processes of test_concurrency.py: an event/status writer, an event tailer and an index refresher.

usage: python concurrency_worker.py writer STORE RUN_ID INDEX SECONDS SHARED_FILE
       python concurrency_worker.py tailer STORE DONE_FILE
       python concurrency_worker.py indexer STORE DONE_FILE
Each prints one JSON line with what it did.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path


def writer(store: Path, run_id: str, index: int, seconds: float, shared: Path) -> dict:
    from bttui.runs import liveness
    from bttui.runs.events import EventWriter
    from bttui.runs.layout import RunPaths
    from bttui.runs.status import StatusFile

    paths = RunPaths(store / run_id)
    rng = random.Random(index)
    own, common = EventWriter(paths.events), EventWriter(shared)
    status = StatusFile(paths)
    pid = os.getpid()
    status.update(status="running", pid=pid, pid_start=liveness.process_start_time(pid), host=liveness.hostname(),
                  boot_id=liveness.boot_id(), stage="pretrain", started=time.time())
    seq = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # line lengths from 60 bytes to 12 KiB: longer than a pipe buffer, still one write each
        pad = "x" * rng.choice((0, 0, 10, 100, 200, 300, 500, 1000, 5000, 12000))
        own.write("step", writer=index, seq=seq, step=seq, loss=rng.random(), pad=pad)
        common.write("step", writer=index, seq=seq, pad=pad)
        if seq % 10 == 0:
            status.update(step=seq, loss=rng.random())
        seq += 1
        time.sleep(0.001)  # a fast trainer's pace, not a disk benchmark
    own.write("status", status="completed", writer=index, seq=seq)
    status.update(status="completed", ended=time.time(), step=seq)
    own.close()
    common.close()
    return {"writer": index, "events": seq}


def tailer(store: Path, done: Path) -> dict:
    from bttui.runs.events import read_events

    offsets: dict[str, int] = {}
    seen: dict[str, list[int]] = {}
    torn = reads = 0
    finishing = False
    while True:
        if done.exists():
            finishing = True  # one last pass after every writer has exited
        for run_dir in sorted(p for p in store.iterdir() if not p.name.startswith(".")):
            log = read_events(run_dir / "events.jsonl", offsets.get(run_dir.name, 0))
            reads += 1
            offsets[run_dir.name] = log.offset
            torn += log.torn
            seen.setdefault(run_dir.name, []).extend(e["seq"] for e in log.events if e.get("type") == "step")
        if finishing:
            break
        time.sleep(0.01)
    return {"seen": seen, "torn": torn, "reads": reads}


def indexer(store: Path, done: Path) -> dict:
    from bttui.runs.index import Index

    calls, errors = 0, []
    index = Index(store)
    while not done.exists():
        try:
            if calls % 4 == 3:
                index.rebuild()
            else:
                index.refresh()
        except Exception as exc:  # noqa: BLE001 - every error is the finding
            errors.append(f"{type(exc).__name__}: {exc}")
        calls += 1
        # a second, independent connection, as another process (the TUI) would hold
        try:
            Index(store).rows()
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
    return {"calls": calls, "errors": errors[:20], "n_errors": len(errors)}


def main() -> None:
    mode = sys.argv[1]
    if mode == "writer":
        out = writer(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), Path(sys.argv[6]))
    elif mode == "tailer":
        out = tailer(Path(sys.argv[2]), Path(sys.argv[3]))
    elif mode == "indexer":
        out = indexer(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
