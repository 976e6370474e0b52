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
    """Load the config, create the run, queue it and launch its trainer; follow it unless detached. Returns the exit code."""
    from rich.console import Console
    from rich.text import Text

    from bttui.config.load import config_to_dict, load_config

    cfg = load_config(config_path, overrides)
    from bttui.runs.store import Store, resolve_store_root

    store = Store(resolve_store_root(store_value))
    _check_disk(store, cfg)
    paths = store.create_run(cfg, config_path=str(config_path))
    run_id = Path(paths.dir).name
    out = Console(highlight=False)

    if detach:
        return start_detached(store, paths, out)

    out.print(Text.assemble(("run ", "dim"), (run_id, "bold"), (f"  ({Path(paths.dir)})", "dim")), soft_wrap=True)
    started = wait_and_launch(store, paths, out)
    if started is None:
        return 0 if _status_of(store, run_id) != "stopped" else 1
    proc, claim = started
    outcome = follow(paths, proc, out, config=config_to_dict(cfg))
    if outcome == DETACHED:
        _detached_hint(out, run_id)
        return 0
    claim.release()  # the trainer has exited; its slot would go stale anyway, this just frees it sooner
    return finish(store, run_id, out)


def _check_disk(store: Any, cfg: Any) -> None:
    from bttui.runs.disk import check_free_space

    check_free_space(store.root, cfg)


def _status_of(store: Any, run_id: str) -> str:
    return store.get(run_id).status


def _detached_hint(out: Any, run_id: str) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, highlight=False).print(
        Text(f"the run goes on in the background; follow it with `bttui attach {run_id}` or `bttui logs {run_id}`, "
             f"stop it with `bttui stop {run_id}`", style="dim"), soft_wrap=True)


def start_detached(store: Any, paths: Any, out: Any, *, resume: bool = False) -> int:
    """Queue the run and start whatever fits; print the run id (stdout) and where it stands (stderr)."""
    from rich.console import Console
    from rich.text import Text

    from bttui.runs import queue

    run_id = Path(paths.dir).name
    started = queue.submit(store, paths, resume=resume)
    out.print(Text(run_id))
    hint = Console(stderr=True, highlight=False)
    if run_id in started:
        what = f"started in the background (pid {started[run_id].pid})"
    else:
        position = queue.Queue(store).position(run_id)
        what = f"queued (position {position}); it starts when a slot frees" if position else "queued"
    hint.print(Text(f"{what}; follow it with `bttui attach {run_id}` or `bttui logs {run_id}`, "
                    f"inspect it with `bttui show {run_id}`", style="dim"), soft_wrap=True)
    return 0


def wait_and_launch(store: Any, paths: Any, out: Any, *, resume: bool = False,
                    ask: Callable[[], str] | None = None) -> tuple[Any, Any] | None:
    """Wait in the queue for this run's turn, then start it attached: (process, claim).

    Ctrl-C while waiting: on a terminal asks stop or detach (detach leaves the
    run queued for any later launch to start); otherwise takes it out of the queue
    (status stopped). Returns None in both cases.
    """
    from rich.text import Text

    from bttui.runs import queue
    from bttui.runs.control import stop_run

    run_id = Path(paths.dir).name

    def on_wait(position: int | None) -> None:
        out.print(Text(f"waiting in the queue (position {position}) for a free slot; Ctrl-C to stop or detach",
                       style="dim"))

    try:
        # On a terminal the trainer gets its own session, so Ctrl-C reaches only this process, which can then
        # offer to detach (and a closed terminal leaves the run going); without one it stays attached.
        return queue.run_when_ready(store, paths, resume=resume, on_wait=on_wait, session=_interactive(out))
    except KeyboardInterrupt:
        choice = _ask_stop_or_detach(out, ask)
        if choice == DETACHED:
            queue.Queue(store).disown(run_id)
            _detached_hint(out, run_id)
        else:
            stop_run(store, store.get(run_id))
            out.print(Text(f"run {run_id} stopped before it started", style="yellow"))
        return None


DETACHED = "detached"


def _interactive(out: Any) -> bool:
    import sys

    return sys.stdin.isatty() and bool(out.is_terminal)


def _ask_stop_or_detach(out: Any, ask: Callable[[], str] | None) -> str:
    """"stop" or "detached": asked on a terminal, "stop" without one (nobody to answer)."""
    from rich.text import Text

    if ask is None:
        if not _interactive(out):
            return "stop"

        def ask() -> str:
            return input("\n[s]top the run (checkpoint, resumable) or [d]etach (it keeps running)? [s/d] ")

    while True:
        try:
            answer = ask().strip().lower()
        except (EOFError, KeyboardInterrupt):
            return "stop"
        if answer in ("s", "stop"):
            return "stop"
        if answer in ("d", "detach"):
            return DETACHED
        out.print(Text("answer s (stop) or d (detach)", style="yellow"))


def follow(paths: Any, proc: Any, out: Any, *, config: dict | None = None, poll_s: float = POLL_S,
           sleep: Callable[[float], None] = time.sleep, ask: Callable[[], str] | None = None) -> str | None:
    """Show a run's progress until its trainer process exits; returns DETACHED if the user detached.

    On a terminal: the plain progress lines scroll above a live status line with a
    progress bar; otherwise only the plain lines, one per notable event. Ctrl-C on
    a terminal asks whether to stop (SIGTERM: the trainer checkpoints and stops) or
    detach (the trainer, in its own session, keeps running); without a terminal it
    stops. Ctrl-C while stopping kills the trainer.
    """
    from rich.text import Text

    from bttui.render.progress import ProgressState

    state = ProgressState(config)
    tail = _Tail(paths)
    live = start_live(state, out)
    interrupts = 0
    try:
        while True:
            try:
                pump_events(tail, state, out, live)
                if proc.poll() is not None:
                    # The trainer is gone: take what it wrote last, then stop.
                    pump_events(tail, state, out, live)
                    break
                sleep(poll_s)
            except KeyboardInterrupt:
                interrupts += 1
                if proc.poll() is not None:
                    continue
                if interrupts == 1:
                    if live is not None:
                        live.stop()
                    choice = _ask_stop_or_detach(out, ask)
                    if choice == DETACHED:
                        return DETACHED
                    if live is not None:
                        live.start()
                    out.print(Text("stopping: the trainer saves a checkpoint and exits (Ctrl-C again to kill it)",
                                   style="yellow"))
                    _signal(proc, signal.SIGTERM)
                else:
                    out.print(Text("killing the trainer", style="red"))
                    proc.kill()
    finally:
        if live is not None:
            live.stop()
    return None


def start_live(state: Any, out: Any) -> Any:
    """On a terminal, a started ``rich.live.Live`` showing ``state``'s status line below the scrolling lines; else None."""
    if not out.is_terminal:
        return None
    from rich.live import Live

    live = Live(state.renderable(), console=out, refresh_per_second=4, transient=True)
    live.start()
    return live


def pump_events(tail: _Tail, state: Any, out: Any, live: Any) -> None:
    """Feed the events written since the last call to ``state``, print the lines they deserve, refresh ``live``."""
    from rich.text import Text

    for event in tail.read():
        for line in state.feed(event):
            out.print(Text(line), soft_wrap=True)
    state.update_status(tail.status())
    if live is not None:
        live.update(state.renderable())


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
