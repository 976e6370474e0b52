"""`bttui run`: create a run, launch its trainer, and follow it in the foreground (or hand it off with --detach)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bttui.errors import BttuiError

# How often the follower reads events.jsonl and status.json: fast enough for a
# live view, cheap enough (two small reads) to cost nothing next to training.
POLL_S = 0.5
# Lines of train.log shown when a run ends badly without saying why.
LOG_TAIL_LINES = 15


def run_experiment(store_value: Path | None, config_path: Path, overrides: list[str], *, detach: bool) -> int:
    """Load the config, create the run, launch the trainer; follow it unless detached. Returns the exit code."""
    from rich.console import Console
    from rich.text import Text

    from bttui.config.load import config_to_dict, load_config

    cfg = load_config(config_path, overrides)
    from bttui.runs.launch import launch
    from bttui.runs.store import Store, resolve_store_root

    store = Store(resolve_store_root(store_value))
    paths = store.create_run(cfg, config_path=str(config_path))
    run_id = Path(paths.dir).name
    out = Console(highlight=False)

    proc = launch(paths, detach=detach)
    if detach:
        out.print(Text(run_id))
        hint = Console(stderr=True, highlight=False)
        hint.print(Text(f"started in the background (pid {proc.pid}); follow it with `bttui attach {run_id}` "
                        f"or `bttui logs {run_id}`, inspect it with `bttui show {run_id}`", style="dim"), soft_wrap=True)
        return 0

    out.print(Text.assemble(("run ", "dim"), (run_id, "bold"), (f"  ({Path(paths.dir)})", "dim")), soft_wrap=True)
    follow(paths, proc, out, config=config_to_dict(cfg))
    return finish(store, run_id, out)


def follow(paths: Any, proc: Any, out: Any, *, config: dict | None = None, poll_s: float = POLL_S,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Show a run's progress until its trainer process exits.

    On a terminal: the plain progress lines scroll above a live status line with a
    progress bar; otherwise only the plain lines, one per notable event. The first
    Ctrl-C sends SIGTERM (the trainer checkpoints and stops), a second one kills it.
    """
    from rich.text import Text

    from bttui.render.progress import ProgressState

    state = ProgressState(config)
    tail = _Tail(paths)
    live = None
    if out.is_terminal:
        from rich.live import Live

        live = Live(state.renderable(), console=out, refresh_per_second=4, transient=True)
        live.start()
    interrupts = 0

    def pump() -> None:
        for event in tail.read():
            for line in state.feed(event):
                out.print(Text(line), soft_wrap=True)
        state.update_status(tail.status())
        if live is not None:
            live.update(state.renderable())

    try:
        while True:
            try:
                pump()
                if proc.poll() is not None:
                    # The trainer is gone: take what it wrote last, then stop.
                    pump()
                    break
                sleep(poll_s)
            except KeyboardInterrupt:
                interrupts += 1
                if proc.poll() is not None:
                    continue
                if interrupts == 1:
                    out.print(Text("stopping: the trainer saves a checkpoint and exits (Ctrl-C again to kill it)",
                                   style="yellow"))
                    _signal(proc, signal.SIGTERM)
                else:
                    out.print(Text("killing the trainer", style="red"))
                    proc.kill()
    finally:
        if live is not None:
            live.stop()


def _signal(proc: Any, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


class _Tail:
    """Incremental reader of a run's events.jsonl (by byte offset) and status.json."""

    def __init__(self, paths: Any) -> None:
        self.paths = paths
        self.offset = 0
        self.torn_reported = False

    def read(self) -> list[dict]:
        from bttui.runs.events import read_events

        if not Path(self.paths.events).exists():
            return []
        log = read_events(self.paths.events, self.offset)
        self.offset = log.offset
        return list(log.events)

    def status(self) -> dict:
        from bttui.runs.status import read_status

        try:
            return read_status(self.paths) or {}
        except (OSError, ValueError, BttuiError):
            # status.json is replaced atomically, but a copy being written by hand
            # or a half-created run must not stop the follower.
            return {}


def finish(store: Any, run_id: str, out: Any) -> int:
    """After the trainer exits: results, confusion matrices, and the exit code (0 only for a completed run)."""
    from rich.console import Console
    from rich.text import Text

    from bttui.cli.views import print_results
    from bttui.render.glyphs import status_text

    record = store.get(run_id)
    summary = record.summary() or {}
    out.print()
    print_results(out, list(summary.get("results") or []))
    out.print()
    line = Text("run ")
    line.append(run_id, style="bold")
    line.append(" ")
    line.append_text(status_text(record.status, record.reason))
    out.print(line, soft_wrap=True)
    if record.status == "completed":
        return 0
    err = Console(stderr=True, highlight=False)
    if not record.reason:
        tail = _log_tail(Path(record.paths.log))
        if tail:
            err.print(Text(f"last lines of {record.paths.log}:", style="dim"))
            err.print(Text(tail), soft_wrap=True)
    return 1


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    from bttui.render.format import clean

    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return clean("\n".join(text.splitlines()[-lines:]))
