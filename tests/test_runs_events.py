"""Event log: one strict-JSON line per event, incremental reads, torn and partial lines, concurrent tailing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bttui.runs.events import EventLog, EventWriter, read_events


def strict_loads(line: str):
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_write_and_read_back(tmp_path):
    path = tmp_path / "events.jsonl"
    before = time.time()
    with EventWriter(path) as w:
        first = w.write("config", config={"name": "x"})
        w.write("step", stage="pretrain", step=1, loss=812.5, lr=0.03)
        w.write("log", level="info", message="héllo\nworld", t=42.0)
    assert w.closed
    assert before <= first["t"] <= time.time() and first["type"] == "config"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3  # the newline inside the message is escaped
    log = read_events(path)
    assert isinstance(log, EventLog)
    assert [e["type"] for e in log.events] == ["config", "step", "log"]
    assert log.events[1] == {"t": log.events[1]["t"], "type": "step", "stage": "pretrain", "step": 1,
                             "loss": 812.5, "lr": 0.03}
    assert log.events[2]["t"] == 42.0 and log.events[2]["message"] == "héllo\nworld"
    assert (log.torn, log.offset, log.partial) == (0, path.stat().st_size, False)
    with pytest.raises(ValueError):
        w.write("late")


def test_non_finite_floats_are_strings(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.write("step", loss=float("nan"), grad=[float("inf"), -float("inf"), 1.5], nested={"x": float("nan")})
    event = strict_loads(path.read_text())
    assert event["loss"] == "nan" and event["grad"] == ["inf", "-inf", 1.5] and event["nested"] == {"x": "nan"}


def test_missing_file_is_empty(tmp_path):
    log = read_events(tmp_path / "nope.jsonl", offset=17)
    assert (log.events, log.torn, log.offset, log.partial) == ([], 0, 17, False)


def test_incremental_reads_with_offset(tmp_path):
    path = tmp_path / "events.jsonl"
    w = EventWriter(path)
    w.write("a", n=1)
    w.write("b", n=2)
    first = read_events(path)
    assert [e["n"] for e in first.events] == [1, 2]
    again = read_events(path, first.offset)
    assert again.events == [] and again.offset == first.offset
    w.write("c", n=3)
    third = read_events(path, first.offset)
    assert [e["n"] for e in third.events] == [3] and third.offset == path.stat().st_size
    w.close()


def test_partial_last_line_is_left_for_the_next_read(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t": 1, "type": "a"}\n{"t": 2, "ty')
    log = read_events(path)
    assert [e["type"] for e in log.events] == ["a"]
    assert log.partial and log.torn == 0 and log.offset == len(b'{"t": 1, "type": "a"}\n')
    with open(path, "ab") as fh:
        fh.write(b'pe": "b"}\n')
    rest = read_events(path, log.offset)
    assert [e["type"] for e in rest.events] == ["b"] and not rest.partial and rest.torn == 0


def test_invalid_complete_lines_are_counted_as_torn(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t": 1, "type": "a"}\n{"t": 2, "ty\n[1, 2]\n\xff\xfe\n\n{"t": 3, "type": "c"}\n')
    log = read_events(path)
    assert [e["type"] for e in log.events] == ["a", "c"]
    assert log.torn == 3 and not log.partial


def test_writer_after_crash_closes_the_torn_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t": 1, "type": "a"}\n{"t": 2, "type": "cut-by-cra')
    with EventWriter(path) as w:  # a resumed trainer
        w.write("resumed")
    log = read_events(path)
    assert [e["type"] for e in log.events] == ["a", "resumed"]
    assert log.torn == 1 and not log.partial


def test_writer_appends_to_existing_log(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.write("a")
    with EventWriter(path) as w:
        w.write("b")
    assert [e["type"] for e in read_events(path).events] == ["a", "b"]
    assert path.read_bytes().count(b"\n") == 2  # no blank line added when the log ends cleanly


WRITER = r"""
import sys
from bttui.runs.events import EventWriter
w = EventWriter(sys.argv[1])
pad = "x" * 3000
for i in range(int(sys.argv[2])):
    w.write("step", i=i, pad=pad)
w.write("done")
"""


def test_concurrent_tailer_never_sees_half_a_line(tmp_path):
    path = tmp_path / "events.jsonl"
    n = 1500
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)])
    seen: list[dict] = []
    offset, torn, reads = 0, 0, 0
    deadline = time.time() + 60
    while time.time() < deadline:
        log = read_events(path, offset)
        reads += 1
        seen += log.events
        torn += log.torn
        offset = log.offset
        if seen and seen[-1]["type"] == "done":
            break
    proc.wait(timeout=30)
    assert torn == 0
    assert [e["i"] for e in seen[:-1]] == list(range(n))
    assert reads > 1
