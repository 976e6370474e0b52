"""Job control commands: stop, resume, rm, logs, attach, wait (and the queue listing)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bttui.errors import BttuiError

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Run id, unique id prefix, or unique run name.",
                                       show_default=False)]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", metavar="DIR", help="Run store directory.",
                                                  show_default=False)]
# A follower (logs -f, attach, wait) re-reads two small files this often.
POLL_S = 0.5
# Progress lines replayed when attaching to a run that has been going for a while.
ATTACH_HISTORY_LINES = 10


def _store(ctx: typer.Context, store: Path | None) -> Any:
    from bttui.cli.app import open_store

    return open_store(ctx, store)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _say(text: str, style: str | None = None, *, stderr: bool = False) -> None:
    from rich.text import Text

    _console(stderr).print(Text(text, style=style or ""), soft_wrap=True)


def stop_command(
    ctx: typer.Context,
    run: RunArg,
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill the trainer now (SIGKILL) instead of "
                                                              "letting it checkpoint and exit.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS",
                                                     help="Wait at most this long for the trainer to exit.",
                                                     show_default=False)] = None,
    store: StoreOpt = None,
) -> None:
    """Stop a run gracefully: it saves a checkpoint and exits (resume it later with `bttui resume`)."""
    from bttui.runs.control import stop_run

    st = _store(ctx, store)
    record = st.resolve(run)
    if not force:
        _say(f"stopping {record.id}: waiting for it to checkpoint and exit", "dim", stderr=True)
    status = stop_run(st, record, force=force, timeout=timeout)
    if status in ("running", "queued"):
        _say(f"{record.id} is still {status}; it may be writing a checkpoint. Kill it with "
             f"`bttui stop --force {record.id}`.", "yellow")
        raise typer.Exit(1)
    _say(f"{record.id} {status}")


def resume_command(
    ctx: typer.Context,
    run: RunArg,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Resume in the background and return.")] = False,
    store: StoreOpt = None,
) -> None:
    """Resume a stopped, failed or crashed run from its newest checkpoint (unfinished cells only)."""
    from bttui.cli import run_cmd
    from bttui.runs.control import resume_run

    st = _store(ctx, store)
    record = st.resolve(run)
    out = _console()
    if detach:
        resume_run(st, record, detach=True)
        from bttui.runs.queue import Queue

        position = Queue(st).position(record.id)
        out.print(record.id)
        where = f"queued (position {position})" if position else "resumed in the background"
        _say(f"{where}; follow it with `bttui attach {record.id}`", "dim", stderr=True)
        return
    # Foreground: same queue wait and follower as `bttui run`.
    from rich.text import Text

    from bttui.runs.control import prepare_resume

    prepare_resume(record)

    out.print(Text.assemble(("resuming ", "dim"), (record.id, "bold")), soft_wrap=True)
    started = run_cmd.wait_and_launch(st, record.paths, out, resume=True)
    if started is None:
        return
    proc, claim = started
    outcome = run_cmd.follow(record.paths, proc, out, config=record.config_dict())
    if outcome == run_cmd.DETACHED:
        run_cmd._detached_hint(out, record.id)
        return
    claim.release()
    code = run_cmd.finish(st, record.id, out)
    if code:
        raise typer.Exit(code)


def rm_command(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Runs to delete.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    store: StoreOpt = None,
) -> None:
    """Delete runs (their whole folders). Running runs are refused: stop them first."""
    from bttui.runs.control import delete_run
    from bttui.runs.status import RUNNING

    st = _store(ctx, store)
    records = [st.resolve(r) for r in runs]
    for record in records:
        if record.status == RUNNING:
            raise BttuiError(f"Run {record.id} is running; stop it first (`bttui stop {record.id}`), then delete it.")
    if not yes:
        if not sys.stdin.isatty():
            raise BttuiError("bttui rm deletes run folders for good; without a terminal to confirm on, pass --yes.")
        names = ", ".join(f"{r.id} ({r.status})" for r in records)
        if not typer.confirm(f"Delete {names}?", default=False):
            raise typer.Exit(1)
    for record in records:
        delete_run(st, record)
        _say(f"deleted {record.id}")


def logs_command(
    ctx: typer.Context,
    run: RunArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output until the run ends.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Copy the bytes as they are (escape sequences included; "
                                                    "for piping into a file, not for a terminal).")] = False,
    store: StoreOpt = None,
) -> None:
    """Print a run's train.log (the trainer's stdout and stderr); control characters are shown escaped (\\e)."""
    st = _store(ctx, store)
    record = st.resolve(run)
    from bttui.runs.slurm import log_path

    path = log_path(record)  # slurm.out for a Slurm run
    # Following: whole lines only, so a multi-byte character or an escape sequence is never cut in two.
    offset = _copy_from(path, 0, raw=raw, whole_lines=follow)
    if not follow:
        return
    from bttui.runs.status import FINAL_STATUSES
    from bttui.runs.store import load_record

    try:
        while True:
            current = load_record(record.paths.dir)
            ended = current is None or current.status in FINAL_STATUSES
            offset = _copy_from(path, offset, raw=raw, whole_lines=not ended)
            if ended:
                return
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return


def _copy_from(path: Path, offset: int, *, raw: bool = False, whole_lines: bool = False) -> int:
    """Write `path` from byte `offset` to stdout; returns the new offset (a missing file is empty).

    The log holds whatever the trainer printed, e.g. a hostile class name: unless `raw`, it is decoded as
    UTF-8 (bad bytes replaced) and its control characters made visible (bttui.render.format.clean), so
    nothing in it can drive the terminal. `whole_lines` stops after the last complete line.
    """
    import codecs

    from bttui.render.format import clean

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = sys.stdout.buffer
    encoding = sys.stdout.encoding or "utf-8"
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    if whole_lines:
        data = data[: data.rfind(b"\n") + 1]
    for start in range(0, len(data), 1 << 16):
        chunk = data[start:start + (1 << 16)]
        if raw:
            out.write(chunk)
        else:
            text = decoder.decode(chunk, final=start + len(chunk) >= len(data)).replace("\r\n", "\n")
            out.write(clean(text).encode(encoding, errors="backslashreplace"))
    out.flush()
    return offset + len(data)


def attach_command(
    ctx: typer.Context,
    run: RunArg,
    store: StoreOpt = None,
) -> None:
    """Follow a run's progress live (loss, cells, GPU memory); Ctrl-C leaves it running."""
    st = _store(ctx, store)
    record = st.resolve(run)
    out = _console()
    code = attach(st, record, out)
    if code:
        raise typer.Exit(code)


def attach(store: Any, record: Any, out: Any, *, poll_s: float = POLL_S, sleep: Any = time.sleep) -> int:
    """Replay the run's recent progress, then follow it until it ends (results, exit code) or Ctrl-C (0)."""
    from rich.text import Text

    from bttui.cli.run_cmd import _Tail, finish, pump_events, start_live
    from bttui.render.progress import ProgressState
    from bttui.runs.status import FINAL_STATUSES
    from bttui.runs.store import load_record

    state = ProgressState(record.config_dict())
    tail = _Tail(record.paths)
    history: list[str] = []
    for event in tail.read():
        history.extend(state.feed(event))
    state.update_status(tail.status())
    for line in history[-ATTACH_HISTORY_LINES:]:
        out.print(Text(line), soft_wrap=True)
    out.print(Text.assemble(("attached to ", "dim"), (record.id, "bold"), ("; Ctrl-C leaves it running", "dim")))
    live = start_live(state, out)
    try:
        while True:
            current = load_record(record.paths.dir)
            pump_events(tail, state, out, live)
            if current is None:
                raise BttuiError(f"Run {record.id} was deleted while attached.")
            if current.status in FINAL_STATUSES:
                break
            sleep(poll_s)
    except KeyboardInterrupt:
        if live is not None:
            live.stop()
            live = None
        out.print(Text(f"detached; {record.id} keeps running (`bttui attach {record.id}` to come back)", style="dim"))
        return 0
    finally:
        if live is not None:
            live.stop()
    return finish(store, record.id, out)


def wait_command(
    ctx: typer.Context,
    run: RunArg,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", help="Give up after this long "
                                                     "(exit code 3).", show_default=False)] = None,
    store: StoreOpt = None,
) -> None:
    """Wait until a run ends. Exit code 0 when it completed, 1 when it failed, crashed or was stopped."""
    from bttui.runs.control import wait_run
    from bttui.runs.status import FINAL_STATUSES

    st = _store(ctx, store)
    record = st.resolve(run)
    try:
        status = wait_run(st, record, poll=POLL_S, timeout=timeout)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    _say(f"{record.id} {status}")
    if status not in FINAL_STATUSES:
        raise typer.Exit(3)
    raise typer.Exit(0 if status == "completed" else 1)


def queue_command(ctx: typer.Context, store: StoreOpt = None) -> None:
    """List runs waiting in the queue, in the order they will start."""
    from bttui.runs.queue import Queue

    entries = Queue(_store(ctx, store)).entries()
    if not entries:
        _say("the queue is empty")
        return
    for i, entry in enumerate(entries, 1):
        owner = f"  (attached to pid {entry.owner_pid})" if entry.owner_pid and entry.owner_alive() else ""
        _say(f"{i:3d}  {entry.run_id}{'  resume' if entry.resume else ''}{owner}")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the job control commands to the root app."""
    app.command("stop")(stop_command)
    app.command("resume")(resume_command)
    app.command("rm")(rm_command)
    app.command("logs")(logs_command)
    app.command("attach")(attach_command)
    app.command("wait")(wait_command)
    app.command("queue")(queue_command)
