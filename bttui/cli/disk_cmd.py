"""Disk commands: `bttui du [RUN...]` (sizes per run and of the store cache) and `bttui gc [--dry-run]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

StoreOpt = Annotated[Optional[Path], typer.Option("--store", metavar="DIR", help="Run store directory.",
                                                  show_default=False)]


def _store(ctx: typer.Context, store: Path | None) -> Any:
    from bttui.cli.app import open_store

    return open_store(ctx, store)


def du_command(
    ctx: typer.Context,
    runs: Annotated[Optional[list[str]], typer.Argument(metavar="RUN", help="Runs to measure (default: all, "
                                                        "plus the store's cache and databases).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sizes (bytes) as JSON.")] = False,
    store: StoreOpt = None,
) -> None:
    """Disk use per run (checkpoints, artifacts, logs) and of the store's data cache, largest first."""
    from bttui.runs.disk import human, store_usage

    st = _store(ctx, store)
    ids = [st.resolve(r).id for r in runs] if runs else None
    usage = store_usage(st, ids)
    if as_json:
        from bttui.cli.app import print_json

        print_json(usage)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for name, justify in (("run", "left"), ("status", "left"), ("checkpoints", "right"), ("artifacts", "right"),
                          ("logs", "right"), ("total", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in sorted(usage["runs"], key=lambda r: r["total"], reverse=True):
        table.add_row(Text(row["id"]), Text(row["status"]), human(row["checkpoints"]), human(row["artifacts"]),
                      human(row["logs"] + row["other"]), human(row["total"]))
    out = Console(highlight=False)
    out.print(table)
    if ids is None:
        out.print(Text(f"cache {human(usage['cache'])}   databases {human(usage['databases'])}   "
                       f"total {human(usage['total'])} in {usage['store']}"))
    else:
        out.print(Text(f"total {human(usage['total'])}"))


def gc_command(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only print what would be removed.")] = False,
    store: StoreOpt = None,
) -> None:
    """Free space: drop all but the last, final and best checkpoints of finished runs, and data caches whose
    dataset is gone."""
    from rich.console import Console
    from rich.text import Text

    from bttui.runs.disk import apply, gc_plan, human

    st = _store(ctx, store)
    plan = gc_plan(st)
    out = Console(highlight=False)
    verb = "would remove" if dry_run else "removing"
    for item in plan:
        out.print(Text(f"{verb} {item.path}  ({human(item.bytes)}): {item.why}"), soft_wrap=True)
    total = sum(item.bytes for item in plan)
    if dry_run:
        out.print(Text(f"{len(plan)} files, {human(total)} would be freed ({total} bytes); nothing removed (--dry-run)"))
        return
    freed = apply(plan)
    out.print(Text(f"removed {len(plan)} files, freed {human(freed)} ({freed} bytes)"))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `du` and `gc` to the root app."""
    app.command("du")(du_command)
    app.command("gc")(gc_command)
