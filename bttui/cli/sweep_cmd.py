"""Sweep commands: `bttui sweep CONFIG --grid KEY=[..]` (alias `sweep start`), `sweep resume`, `sweep show`, `sweep ls`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

StoreOpt = Annotated[Optional[Path], typer.Option("--store", metavar="DIR", help="Run store directory.",
                                                  show_default=False)]
SweepArg = Annotated[str, typer.Argument(metavar="SWEEP", help="Sweep id or unique id prefix.", show_default=False)]
# Sweeps run for hours: a status change shows up within this many seconds.
POLL_S = 2.0


class SweepGroup(TyperGroup):
    """`bttui sweep CONFIG ...` means `bttui sweep start CONFIG ...` (the subcommands keep their names)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


def _store(ctx: typer.Context, store: Path | None) -> Any:
    from bttui.cli.app import open_store

    return open_store(ctx, store)


def _say(text: str, style: str | None = None, *, stderr: bool = False) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=stderr, highlight=False).print(Text(text, style=style or ""), soft_wrap=True)


def start_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Base experiment config (TOML).",
                                           show_default=False)],
    grid: Annotated[list[str], typer.Option("--grid", "-g", metavar="KEY=[VALUES]",
                                            help="A config key and its values as a TOML array (repeatable); one run "
                                                 "per combination.", show_default=False)],
    overrides: Annotated[Optional[list[str]], typer.Option("--set", "-s", metavar="KEY=VALUE",
                                                           help="Override a config key in every point (repeatable).",
                                                           show_default=False)] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Queue the runs and return.")] = False,
    store: StoreOpt = None,
) -> None:
    """Queue one run per grid point under a sweep id; without --detach, follow until all points end.

    Exit code 0 when every point completed, 1 otherwise.
    """
    from bttui.runs.sweep import create_sweep, parse_grid

    st = _store(ctx, store)
    from bttui.cli.run_cmd import _check_disk

    parsed = parse_grid(grid)
    _check_disk(st, None)  # the 1 GiB floor; each point is checked again when it launches
    sweep = create_sweep(st, config, parsed, overrides=list(overrides or []))
    print(sweep.id, flush=True)
    _say(f"{len(sweep.points)} runs queued; see them with `bttui sweep show {sweep.id}`", "dim", stderr=True)
    if detach:
        return
    raise typer.Exit(_follow(st, sweep.id))


def _follow(store: Any, sweep_id: str) -> int:
    from bttui.runs.status import COMPLETED
    from bttui.runs.sweep import follow_sweep, point_label

    def on_change(point: Any, old: str) -> None:
        if not old and point.status == "queued":
            return  # the initial state of every point: not news
        acc = point.best_accuracy()
        extra = f"  best {acc * 100:.1f}%" if acc is not None else ""
        reason = f" ({point.record.reason})" if point.record is not None and point.record.reason and \
            point.status != COMPLETED else ""
        run = point.record.id if point.record is not None else "-"
        _say(f"{point.status:<9} {run}  {point_label(point.point)}{extra}{reason}")

    try:
        sweep = follow_sweep(store, sweep_id, on_change=on_change, poll=POLL_S)
    except KeyboardInterrupt:
        _say(f"the sweep goes on in the background; `bttui sweep show {sweep_id}`", "dim", stderr=True)
        return 0
    counts = sweep.counts()
    _say("sweep " + sweep_id + ": " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0 if counts.get(COMPLETED, 0) == len(sweep.points) else 1


def resume_command(
    ctx: typer.Context,
    sweep: SweepArg,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Queue the points and return.")] = False,
    store: StoreOpt = None,
) -> None:
    """Re-queue a sweep's unfinished points (failed, stopped, crashed, never created); completed ones are kept."""
    from bttui.runs.sweep import resolve_sweep, resume_sweep

    st = _store(ctx, store)
    sweep_id = resolve_sweep(st, sweep)
    done = resume_sweep(st, sweep_id)
    _say(f"sweep {sweep_id}: {len(done['resumed'])} resumed, {len(done['created'])} created, "
         f"{len(done['requeued'])} re-queued, {len(done['skipped'])} left as they are")
    if detach:
        return
    raise typer.Exit(_follow(st, sweep_id))


def show_command(
    ctx: typer.Context,
    sweep: SweepArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sweep as JSON.")] = False,
    store: StoreOpt = None,
) -> None:
    """Print a sweep's grid: each point's values, run, status and best test accuracy."""
    from bttui.runs.sweep import load_sweep, toml_value

    st = _store(ctx, store)
    sw = load_sweep(st, sweep)
    if as_json:
        from bttui.cli.app import print_json

        print_json(sw.to_json())
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from bttui.render.glyphs import status_text

    keys = sw.keys
    table = Table(title=f"sweep {sw.id}", title_justify="left", box=None, pad_edge=False)
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("run")
    table.add_column("status")
    table.add_column("best acc", justify="right")
    for p in sw.points:
        acc = p.best_accuracy()
        table.add_row(*[Text(toml_value(p.point[k])) if k in p.point else Text("-") for k in keys],
                      Text(p.record.id if p.record else "-"),
                      status_text(p.status, None) if p.record else Text("missing", style="red"),
                      Text(f"{acc * 100:.1f}%" if acc is not None else "-"))
    out = Console(highlight=False)
    out.print(table)
    counts = sw.counts()
    out.print(Text(", ".join(f"{n} {s}" for s, n in sorted(counts.items())), style="dim"))


def ls_command(ctx: typer.Context, store: StoreOpt = None) -> None:
    """List the store's sweeps, newest first, with their point counts by status."""
    from bttui.runs.sweep import list_sweeps, load_sweep

    st = _store(ctx, store)
    ids = list_sweeps(st)
    if not ids:
        _say("no sweeps in the store")
        return
    for sweep_id in ids:
        counts = load_sweep(st, sweep_id).counts()
        _say(f"{sweep_id}  " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add the `sweep` command group."""
    sweep_app = typer.Typer(cls=SweepGroup, help="Grid sweeps: one queued run per combination of config values "
                                                 "(`bttui sweep CONFIG --grid ...` is short for `sweep start`).",
                            no_args_is_help=True)
    sweep_app.command("start")(start_command)
    sweep_app.command("resume")(resume_command)
    sweep_app.command("show")(show_command)
    sweep_app.command("ls")(ls_command)
    app.add_typer(sweep_app, name="sweep")
    groups["sweep"] = sweep_app
