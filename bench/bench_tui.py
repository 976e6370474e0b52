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

    python bench/bench_tui.py [--seconds 15] [--runs 8] [--rate 4]
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
    from bttui.tui.sources import write_sample_store

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--refresh", type=float, default=2.0, help="runs table refresh interval (the app's default)")
    ap.add_argument("--follow", type=float, default=1.0, help="dashboard tail interval (the app's default)")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="2")
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
