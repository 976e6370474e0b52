"""Reliability figures: run the fault suite (tests/faults) and print kill points, recoveries, lost events, fuzz and
concurrency numbers, plus one row per kill scenario (the table in docs/reliability.md).

usage: OMP_NUM_THREADS=2 python bench/reliability_report.py [--json OUT.json] [-- extra pytest args]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_suite(extra: list[str]) -> tuple[int, dict, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "reliability.json"
        env = {**os.environ, "BTTUI_RELIABILITY_JSON": str(target)}
        env.setdefault("OMP_NUM_THREADS", "2")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider", *extra],
                              cwd=REPO, env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - t0
        data = json.loads(target.read_text()) if target.exists() else {"figures": {}, "kill_points": {}}
    return proc.returncode, data, elapsed, proc.stdout


def summary_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if " in " in line and ("passed" in line or "failed" in line)]
    return lines[-1].strip("= ") if lines else "(no pytest summary)"


def kill_table(kills: dict) -> list[str]:
    rows = ["| scenario | BTTUI_FAULT | exit | store says | resumed at step | final | events lost | cell_end events "
            "| temp files after crash / resume / gc |",
            "|---|---|---|---|---|---|---|---|---|"]
    for sid, r in kills.items():
        ev = r.get("events", {})
        lost = len(ev.get("missing_steps", [])) + len(ev.get("missing_epochs", [])) + (0 if ev.get("cell_ends") else 1)
        start = ev.get("resumed_start_step")
        temps = " / ".join(str(len(r.get(k, []))) for k in ("temps_after_crash", "temps_after_resume", "temps_after_gc"))
        rows.append(f"| {sid} | `{r.get('spec')}` | {r.get('crash_rc')} | {r.get('crash_status')} | "
                    f"{'-' if start is None else start} | {r.get('final_status')} | {lost} | {ev.get('cell_ends')} | "
                    f"{temps} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    code, data, elapsed, stdout = run_suite(args.pytest_args)
    f = data.get("figures", {})
    print(f"fault suite: {summary_line(stdout)} ({elapsed:.0f} s wall, {os.cpu_count()} CPUs)")
    for line in stdout.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            print("  " + line)
    print(f"kill points: {f.get('kill_points', 0)} distinct, {f.get('kill_scenarios', 0)} scenarios tried, "
          f"{f.get('runs_recovered', 0)} runs recovered, {f.get('events_lost', 0)} events lost, "
          f"{f.get('torn_lines_skipped', 0)} torn lines skipped")
    print(f"fuzz: {f.get('fuzz_cases', 0)} cases tried, {f.get('fuzz_crashes', 0)} crashes")
    print(f"concurrency: {f.get('concurrent_writers', 0)} writers x {f.get('concurrent_seconds', 0)} s, "
          f"{f.get('concurrent_events', 0)} events, {f.get('concurrent_lost', 0)} lost, "
          f"{f.get('concurrent_duplicated', 0)} duplicated, {f.get('database_locked', 0)} 'database is locked'")
    print()
    print("\n".join(kill_table(data.get("kill_points", {}))))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1, default=str) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
