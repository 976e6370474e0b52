"""Messages worker threads post to the UI thread, each named as a past fact."""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from bttui.gpus import GpuSample
from bttui.tui.sources import RunRow


@dataclass
class RunsRefreshed(Message):
    """The store was re-read: every run row, and the GPUs sampled in the same pass."""

    rows: list[RunRow]
    gpus: list[GpuSample]
    gpus_available: bool


@dataclass
class EventsAppended(Message):
    """New complete lines of one run's events.jsonl, plus its status and log tail at that moment.

    Batched (everything since the last poll), so it is never replaced.
    """

    run_id: str
    events: list[dict]
    offset: int
    torn: int = 0
    run: RunRow | None = None
    log_lines: list[str] = field(default_factory=list)


@dataclass
class SummaryLoaded(Message):
    """A run's summary.json was read (None when absent)."""

    run_id: str
    run: RunRow | None
    summary: dict | None


@dataclass
class EmbeddingLoaded(Message):
    """A cell's 2-D embedding was read (None when the file is absent or unreadable)."""

    run_id: str
    index: int
    method: str
    embedding: dict | None


@dataclass
class RunControlled(Message):
    """A stop/resume/delete finished for one run (``run_id`` None: the whole batch is done)."""

    action: str
    run_id: str | None
    ok: bool
    text: str


@dataclass
class QueueDrained(Message):
    """The queue was asked to start what fits: the runs started now, or why it could not."""

    started: list[str]
    error: str | None = None
