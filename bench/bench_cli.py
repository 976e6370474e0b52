"""CLI latency: `bttui ls`, `bttui ls --json` over 1,000 runs and `bttui run --detach`, against `python -c pass`.

Each command runs as a subprocess (what a user waits for), median of N after one
untimed warm-up (which builds the SQLite index: reported as "cold"). The store
is generated directly in the run-directory format (run.json, status.json,
summary.json, config.toml). `run --detach` uses a tiny config; each started
trainer is killed right after the command returns, outside the timing.

    python bench/bench_cli.py [--runs 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.5


def bttui_argv() -> list[str]:
    """The installed `bttui` script next to this interpreter (what users type), else `python -m bttui`."""
    script = Path(sys.executable).with_name("bttui")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bttui"]


def make_store(root: Path, n: int, seed: int = 0) -> None:
    """`n` finished and running runs written straight in the store's file format (fast: no config loading)."""
    rng = random.Random(seed)
    statuses = ["completed"] * 6 + ["failed", "stopped", "crashed"]
    t0 = time.time() - n * 600
    datasets = ["organs_axial", "organs_coronal", "organs_sagittal", "crc"]
    for i in range(n):
        created = t0 + i * 600
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created))
        name = f"exp-{i % 37}"
        run_id = f"{stamp}-{name}-{i % 65536:04x}"
        d = root / run_id
        (d / "checkpoints").mkdir(parents=True)
        (d / "artifacts").mkdir()
        status = rng.choice(statuses)
        run_json = {"format": 1, "id": run_id, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                    time.gmtime(created)), "host": "bench", "boot_id": "bench", "git_commit": None,
                    "versions": {"python": "3.11", "bttui": "0.1.0"}, "hardware": {}, "lineage": {},
                    "sweep_id": None, "config_path": None}
        ds = rng.sample(datasets, 2)
        results = [{"cell": f"{d_}/random/linear/1/s0", "dataset": d_, "task": "t", "init": "random",
                    "strategy": "linear", "label_fraction": 1.0, "n_train": 100, "seed": 0, "status": "completed",
                    "test_accuracy": rng.random(), "per_class_accuracy": [0.5, 0.5],
                    "confusion_matrix": [[5, 5], [5, 5]], "class_names": ["a", "b"],
                    "lineage": {"backbone_from": None}} for d_ in ds]
        status_json = {"status": status, "reason": None if status == "completed" else "bench", "pid": None,
                       "pid_start": None, "host": "bench", "boot_id": "bench", "heartbeat": created + 500,
                       "started": created, "ended": created + 500, "stage": None, "cell": None,
                       "cells_done": 2, "cells_total": 2, "cells": {r["cell"]: "completed" for r in results}}
        (d / "run.json").write_text(json.dumps(run_json))
        (d / "status.json").write_text(json.dumps(status_json))
        (d / "summary.json").write_text(json.dumps({"pretrain": None, "results": results}))
        (d / "config.toml").write_text(f'name = "{name}"\n[finetune]\ndatasets = {json.dumps(ds)}\n')
        (d / "events.jsonl").write_text("")


def timed(argv: list[str], env: dict, repeat: int, after=None) -> tuple[float, list[float]]:
    """(first call, the `repeat` calls after it) in seconds; `after(stdout)` runs after each call, untimed."""
    times = []
    for i in range(repeat + 1):
        t = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        dt = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
        if after is not None:
            after(proc.stdout)
        times.append(dt)
    return times[0], times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bttui-bench-cli-"))
    try:
        store = tmp / "store"
        store.mkdir()
        t = time.perf_counter()
        make_store(store, args.runs)
        gen_s = time.perf_counter() - t
        (tmp / "settings.toml").write_text(f'reservations_dir = "{tmp / "res"}"\n')
        env = {**os.environ, "BTTUI_STORE": str(store), "BTTUI_CONFIG": str(tmp / "settings.toml"),
               "COLUMNS": "120", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        env.pop("BTTUI_FAULT", None)
        cli = bttui_argv()

        rows = []
        cold, base = timed([sys.executable, "-c", "pass"], env, args.repeat)
        baseline = statistics.median(base)
        rows.append(("python -c pass", cold, baseline))
        cold, warm = timed([*cli, "ls"], env, args.repeat)
        rows.append((f"bttui ls ({args.runs} runs)", cold, statistics.median(warm)))
        cold, warm = timed([*cli, "ls", "--json"], env, args.repeat)
        rows.append((f"bttui ls --json ({args.runs} runs)", cold, statistics.median(warm)))

        # run --detach: a tiny config into an empty store (its trainer is killed after each call, untimed).
        run_store = tmp / "run-store"
        config = tmp / "tiny.toml"
        config.write_text(f'name = "bench"\n[data]\nroot = "{tmp / "data"}"\nsynthesize = true\nimage_size = 32\n'
                          f'synth_per_class = 4\n[finetune]\ninit = ["random"]\nepochs = 1\n')
        run_env = {**env, "BTTUI_STORE": str(run_store)}

        def kill_started(stdout: str) -> None:
            from bttui.runs.control import stop_run
            from bttui.runs.store import Store

            st = Store(run_store)
            record = st.get(stdout.strip().splitlines()[-1])
            if record.status in ("queued", "running"):
                stop_run(st, record, force=True, timeout=10)

        cold, warm = timed([*cli, "run", str(config), "--detach"], run_env, args.repeat, after=kill_started)
        rows.append(("bttui run --detach (tiny config)", cold, statistics.median(warm)))

        print(f"store of {args.runs} runs generated in {gen_s:.2f} s; {args.repeat} timed calls each, median; "
              f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs")
        print(f"{'command':40s} {'first (s)':>10s} {'median (s)':>11s} {'x baseline':>11s} {'- baseline (s)':>15s}")
        for name, first, med in rows:
            print(f"{name:40s} {first:10.3f} {med:11.3f} {med / baseline:11.1f} {med - baseline:15.3f}"
                  + ("" if name.startswith("python") or med < TARGET_S else "   > target 0.5 s"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
