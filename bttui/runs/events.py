"""The append-only event log (events.jsonl): one strict-JSON object per line, written whole, read incrementally.

Writers: each `EventWriter.write` is one `os.write` of one complete line on an
O_APPEND descriptor, so a reader tailing the file sees whole lines, except a
line torn by a crash. Non-finite floats are written as the strings "nan",
"inf" and "-inf" (strict JSON has no NaN); readers get those strings back.

Readers: `read_events(path, offset)` returns the complete lines after
`offset` and the byte offset just past the last one, so a tailer calls it
again with `log.offset`. A final line without its newline may still be
being written: it is left unread (`partial=True`). A complete line that is
not a JSON object (a crash mid-line followed by a resume) is skipped and
counted in `torn`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bttui.faults import fault_point, fault_torn_write
from bttui.runs.atomic import dumps

_FILE_MODE = 0o666  # before the umask, like open()


class EventWriter:
    """Appends events to one events.jsonl; safe to share between threads (each line is one write call)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        # After a crash mid-line, a resumed writer would glue its first event onto the fragment and
        # lose both; a newline closes the fragment so readers skip (and count) only it.
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                os.write(self._fd, b"\n")

    def write(self, type: str, **fields: Any) -> dict:
        """Append `{"t": time.time(), "type": type, **fields}` as one line; returns the dict written.

        A `t` in `fields` overrides the clock (replays, tests).
        """
        if self._fd is None:
            raise ValueError(f"EventWriter for {self.path} is closed")
        event: dict[str, Any] = {"t": time.time(), "type": type}
        event.update(fields)
        data = (dumps(event) + "\n").encode("utf-8")
        # One call writes the whole line on regular files; the loop only guards against a short write.
        fault_torn_write("events.torn", self._fd, data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        fault_point("events.written")
        return event

    def close(self) -> None:
        """Close the file; further writes raise ValueError."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@dataclass
class EventLog:
    """Events read from one offset: `offset` is where the next read starts; `torn` counts skipped bad lines."""

    events: list[dict] = field(default_factory=list)
    torn: int = 0
    offset: int = 0
    partial: bool = False


def parse_lines(data: bytes) -> tuple[list[dict], int]:
    """Events and torn-line count of complete newline-terminated `data` (blank lines are neither)."""
    events: list[dict] = []
    torn = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
            torn += 1
            continue
        if isinstance(value, dict):
            events.append(value)
        else:
            torn += 1
    return events, torn


def read_events(path: str | os.PathLike, offset: int = 0) -> EventLog:
    """Complete events after byte `offset` of `path`; a missing file is an empty log at `offset`."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if offset > size:
                # The file was replaced by a shorter one (e.g. copied again): read it from the start.
                offset = 0
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return EventLog([], 0, offset, False)
    end = data.rfind(b"\n") + 1
    events, torn = parse_lines(data[:end])
    return EventLog(events, torn, offset + end, end < len(data))
