"""Fixtures of the fault suite (shared synthetic data, isolated settings) and the figures printed at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import faultkit


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("BTTUI_CONFIG", str(faultkit.settings_file(tmp_path)))
    monkeypatch.delenv("BTTUI_STORE", raising=False)
    monkeypatch.delenv("BTTUI_FAULT", raising=False)


@pytest.fixture(scope="session")
def mimeta_root(tmp_path_factory) -> Path:
    """Two tiny synthetic MIMeta datasets (4 images per class, 32 px), built once per session."""
    from bttui.data.synth import synthesize

    root = tmp_path_factory.mktemp("mimeta")
    synthesize(root, datasets=[faultkit.DATASET, faultkit.OTHER_DATASET], per_class=faultkit.PER_CLASS,
               image_size=faultkit.IMAGE_SIZE)
    return root


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    figures = dict(faultkit.FIGURES)
    if not figures:
        return
    tr = terminalreporter
    tr.section("bttui reliability figures")
    for line in figure_lines(figures):
        tr.write_line(line)
    target = os.environ.get("BTTUI_RELIABILITY_JSON")
    if target:
        faultkit.json_dump(target, {"figures": figures, "kill_points": faultkit.KILL_RESULTS})


def figure_lines(f: dict) -> list[str]:
    lines = []
    if f.get("kill_scenarios"):
        lines.append(f"kill points: {f.get('kill_points', 0)} distinct points, {f['kill_scenarios']} scenarios tried, "
                     f"{f.get('runs_recovered', 0)} runs recovered, {f.get('events_lost', 0)} events lost, "
                     f"{f.get('torn_lines_skipped', 0)} torn lines skipped")
    if f.get("fuzz_cases"):
        lines.append(f"fuzz: {f['fuzz_cases']} cases tried, {f.get('fuzz_crashes', 0)} crashes "
                     f"(tracebacks, wrong exit codes or leftovers)")
    if f.get("concurrent_writers"):
        lines.append(f"concurrency: {f['concurrent_writers']} writers x {f.get('concurrent_seconds', 0):.1f} s, "
                     f"{f.get('concurrent_events', 0)} events, {f.get('concurrent_lost', 0)} lost, "
                     f"{f.get('concurrent_duplicated', 0)} duplicated, {f.get('concurrent_reader_calls', 0)} reader calls, "
                     f"{f.get('database_locked', 0)} 'database is locked'")
    return lines
