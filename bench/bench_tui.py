"""TUI benchmark: time to first paint, resident memory, and CPU while following 8 live runs at 4 updates/s.

Each measurement runs in a fresh interpreter so imports are paid like a user's `bttui`:

* first paint: from interpreter start (before importing bttui) until the runs
  screen has mounted and shown the store's runs, headless (App.run_test).
  Target <= 1 s.
* memory: peak resident set size of that process (ru_maxrss). Target <= 150 MB.
* CPU: 8 runs whose trainers are fake processes appending step events and
  rewriting status.json 4 times a second; the TUI (its default intervals:
  runs table every 2 s, dashboard tail every 1 s; --refresh/--follow change
  them) follows one run's dashboard over the runs table. CPU
  seconds of the TUI process (all threads) per wall second over the window.
  Target <= 10% of one core.
* scale (--scale N): a store of N generated finished runs (plus the sample
  store): time from the app's start to the table's first rows, then one
  refresh with nothing changed and one after 10 runs' status.json changed,
  split into the worker's store scan and the UI thread's table update.

    python bench/bench_tui.py [--seconds 15] [--runs 8] [--rate 4] [--scale 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PAINT = textwrap.dedent("""
    import time, resource, sys
    t0 = time.perf_counter()
    import asyncio
    from bttui.tui.app import BttuiApp
    from bttui.tui.sources import StoreSource, SystemClock
    from bttui.gpus import FakeGpuSampler

    async def main():
        clock = SystemClock()
        app = BttuiApp(StoreSource(sys.argv[1], clock=clock), clock, FakeGpuSampler())
        async with app.run_test(size=(120, 36)) as pilot:
            while not getattr(app.screen, "loaded", False):
                await pilot.pause(0.005)
            await pilot.pause()
            paint = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(paint, rss, "torch" in sys.modules)
    asyncio.run(main())
""")

FOLLOW = textwrap.dedent("""
    import time, sys, asyncio
    from bttui.tui.app import BttuiApp
    from bttui.tui.sources import StoreSource, SystemClock
    from bttui.gpus import FakeGpuSampler

    async def main():
        clock = SystemClock()
        app = BttuiApp(StoreSource(sys.argv[1], clock=clock), clock, FakeGpuSampler(),
                       refresh_interval=float(sys.argv[3]), follow_interval=float(sys.argv[4]))
        async with app.run_test(size=(120, 36)) as pilot:
            while not getattr(app.screen, "loaded", False):
                await pilot.pause(0.01)
            await pilot.press("enter")  # follow the first run's dashboard too
            await pilot.pause(2.0)      # warm-up: backlog read, first charts drawn
            c0, w0 = time.process_time(), time.perf_counter()
            await pilot.pause(float(sys.argv[2]))
            c1, w1 = time.process_time(), time.perf_counter()
            print((c1 - c0) / (w1 - w0), app.screen.state.n_events)
    asyncio.run(main())
""")

SCALE = textwrap.dedent("""
    import time, sys, asyncio, json, os
    from pathlib import Path
    t0 = time.perf_counter()
    from bttui.tui.app import BttuiApp
    from bttui.tui.sources import StoreSource, SystemClock
    from bttui.tui.messages import RunsRefreshed
    from bttui.gpus import FakeGpuSampler

    root = Path(sys.argv[1])
    async def main():
        clock = SystemClock()
        source = StoreSource(root, clock=clock)
        app = BttuiApp(source, clock, FakeGpuSampler(), refresh_interval=3600.0, queue_interval=None)
        async with app.run_test(size=(200, 50)) as pilot:
            while not getattr(app.screen, "loaded", False):
                await pilot.pause(0.005)
            first = time.perf_counter() - t0
            screen = app.screen
            n = screen.query_one("#runs").row_count
            out = {"runs": n, "first_rows_s": first}
            for label, change in (("unchanged", 0), ("10_changed", 10)):
                for d in sorted(root.iterdir())[:change]:
                    st = json.loads((d / "status.json").read_text())
                    st["loss"] = (st.get("loss") or 1.0) * 0.5
                    (d / "status.json").write_text(json.dumps(st))
                t = time.perf_counter()
                rows = source.list_runs()
                scan = time.perf_counter() - t
                t = time.perf_counter()
                screen.on_runs_refreshed(RunsRefreshed(rows, [], False))
                ui = time.perf_counter() - t
                await pilot.pause()
                out[label] = {"scan_s": scan, "ui_s": ui}
            t = time.perf_counter()
            await pilot.press("slash", *"status:completed", "enter")
            await pilot.pause()
            out["filter_typed_s"] = time.perf_counter() - t
            out["shown_after_filter"] = screen.query_one("#runs").row_count
            for text in ("status:failed", ""):
                screen.filter_text = text
                t = time.perf_counter()
                screen.apply_view()
                out[f"refilter_{text or 'cleared'}_s"] = time.perf_counter() - t
            print(json.dumps(out))
    asyncio.run(main())
""")

WRITER = textwrap.dedent("""
    import json, sys, time, os
    from pathlib import Path
    dirs = [Path(p) for p in sys.argv[3:]]
    rate, seconds = float(sys.argv[1]), float(sys.argv[2])
    step = 0
    end = time.time() + seconds
    while time.time() < end:
        step += 1
        for d in dirs:
            with open(d / "events.jsonl", "a") as fh:
                fh.write(json.dumps({"t": time.time(), "type": "step", "stage": "pretrain", "step": step,
                                     "loss": 1000.0 / step, "on_diag": 600.0 / step, "off_diag": 400.0 / step,
                                     "lr": 0.1, "images_per_s": 3000.0, "data_wait": 0.02}) + "\\n")
            st = json.loads((d / "status.json").read_text())
            st.update(step=step, heartbeat=time.time(), loss=1000.0 / step)
            tmp = d / "status.json.tmp"
            tmp.write_text(json.dumps(st))
            os.replace(tmp, d / "status.json")
        time.sleep(1.0 / rate)
""")


def make_store(root: Path, n_runs: int) -> list[Path]:
    """Sample store plus ``n_runs`` running runs owned by this (live) process on this machine."""
    from bttui.runs import liveness
    from bttui.tui.sources import write_sample_store  # noqa

    write_sample_store(root)
    dirs = []
    now = time.time()
    for i in range(n_runs):
        run_id = f"20990101-0000{i:02d}-live-{i:04x}"
        d = root / run_id
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"format": 1, "id": run_id, "name": f"live-{i}",
                                                "created": "2099-01-01T00:00:00Z"}))
        (d / "status.json").write_text(json.dumps({
            "status": "running", "pid": os.getpid(), "pid_start": liveness.process_start_time(os.getpid()),
            "host": liveness.hostname(), "boot_id": liveness.boot_id(), "heartbeat": now, "started": now,
            "stage": "pretrain", "epoch": 1, "epochs": 10, "step": 0, "steps": 1000}))
        (d / "events.jsonl").write_text("")
        dirs.append(d)
    return dirs


def make_many(root: Path, n_runs: int) -> None:
    """``n_runs`` finished runs (run.json, status.json, config.toml), like a long-used store."""
    statuses = ("completed", "failed", "stopped")
    datasets = ("crc", "organs_axial", "organs_sagittal", "derm", "chest")
    for i in range(n_runs):
        run_id = f"2024{1 + i % 12:02d}{1 + i % 28:02d}-{i // 60 % 24:02d}{i % 60:02d}00-run-{i:05d}-{i:04x}"
        d = root / run_id
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"format": 1, "id": run_id, "name": f"run-{i}",
                                                "created": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00Z",
                                                "sweep_id": f"sw-{i // 50:03d}" if i % 3 == 0 else None}))
        (d / "status.json").write_text(json.dumps({
            "status": statuses[i % 3], "started": 1.7e9 + i, "ended": 1.7e9 + i + 600, "heartbeat": 1.7e9 + i + 600,
            "stage": None, "epoch": 10, "epochs": 10, "cells_done": 4, "cells_total": 4, "loss": 300.0 + i % 97,
            "best_accuracy": 0.5 + (i % 40) / 100}))
        ds = datasets[i % len(datasets)]
        (d / "config.toml").write_text(f'name = "run-{i}"\n[pretrain]\ndatasets = ["{ds}"]\n'
                                       f'[finetune]\ndatasets = ["{ds}"]\n')


def scale(n_runs: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        from bttui.tui.sources import write_sample_store  # noqa

        write_sample_store(root)
        make_many(root, n_runs)
        out = subprocess.run([sys.executable, "-c", SCALE, str(root)], capture_output=True, text=True, env=env,
                             check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--refresh", type=float, default=2.0, help="runs table refresh interval (the app's default)")
    ap.add_argument("--follow", type=float, default=1.0, help="dashboard tail interval (the app's default)")
    ap.add_argument("--scale", type=int, default=0, help="only the scale measurement, with this many runs")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    if args.scale:
        print(json.dumps(scale(args.scale, env), indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        dirs = make_store(root, args.runs)
        paints, rss = [], []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", PAINT, str(root)], capture_output=True, text=True, env=env,
                                 check=True).stdout.split()
            paints.append(float(out[0]))
            rss.append(float(out[1]))
            torch_loaded = out[2] == "True"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(args.rate), str(args.seconds + 10),
                                   *map(str, dirs)], env=env)
        try:
            out = subprocess.run([sys.executable, "-c", FOLLOW, str(root), str(args.seconds), str(args.refresh),
                                  str(args.follow)], capture_output=True, text=True, env=env, check=True).stdout.split()
        finally:
            writer.terminate()
            writer.wait()
    cpu, n_events = float(out[0]), int(out[1])
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "first_paint_s": {"median": sorted(paints)[len(paints) // 2], "all": [round(p, 3) for p in paints],
                          "target": 1.0},
        "max_rss_mb": {"median": sorted(rss)[len(rss) // 2], "target": 150},
        "torch_imported": torch_loaded,
        "follow_cpu_fraction_of_one_core": {"value": round(cpu, 4), "target": 0.10, "runs": args.runs,
                                            "updates_per_s": args.rate, "window_s": args.seconds,
                                            "refresh_s": args.refresh, "follow_s": args.follow,
                                            "events_seen_by_dashboard": n_events},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
