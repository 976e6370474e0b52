"""The Typer app: every `bttui` command, the global `--store` option and the one place errors become messages.

Only typer, the standard library and cheap bttui modules are imported at module
level; Rich renderers, the run store and the config loader are imported inside
the commands, so `bttui --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from bttui import __version__
from bttui.errors import BttuiError

# Rows `bttui ls` shows without --all: a screenful on a 24-line terminal.
LS_PAGE = 20


def report_error(err: BaseException) -> None:
    """Print a user error as one paragraph on stderr, literally (markup and control characters in it stay inert)."""
    from rich.console import Console
    from rich.text import Text

    from bttui.render.format import clean

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(Text.assemble(("bttui: error: ", "bold red"), clean(str(err))))


def storage_error(exc: BaseException) -> BttuiError | None:
    """A BttuiError paragraph for an OSError the storage refused (read-only, full, quota, permission); else None.

    These come from the environment, not from a bug, so they get a message naming the path and the fix
    instead of a traceback.
    """
    import errno

    if not isinstance(exc, OSError):
        return None
    advice = {
        errno.EROFS: "the filesystem is mounted read-only. Remount it read-write or use a writable store "
                     "(--store DIR or $BTTUI_STORE).",
        errno.ENOSPC: "the disk is full. Free space (`bttui gc` drops old checkpoints of finished runs) or use "
                      "another store (--store DIR or $BTTUI_STORE).",
        getattr(errno, "EDQUOT", errno.ENOSPC): "your disk quota is used up. Free space (`bttui gc`) or use another "
                                                "store (--store DIR or $BTTUI_STORE).",
        errno.EACCES: "permission denied. Check the owner and mode of that folder, or use a store you can write "
                      "(--store DIR or $BTTUI_STORE).",
        errno.EPERM: "the operation is not permitted there. Check the owner and mode of that folder, or use a store "
                     "you can write (--store DIR or $BTTUI_STORE).",
    }.get(exc.errno)  # type: ignore[arg-type]
    if advice is None:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    if exc.filename2:
        where += f" -> {exc.filename2}"
    return BttuiError(f"Cannot write{where}: {exc.strerror or exc}; {advice}")


class BttuiGroup(TyperGroup):
    """The root command group: a BttuiError raised by any command exits with its code and message, no traceback;
    so does an OSError from storage that refuses writes (read-only, full, no permission)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BttuiError as err:
            report_error(err)
            raise typer.Exit(err.exit_code) from None
        except OSError as exc:
            err = storage_error(exc)
            if err is None:
                raise
            report_error(err)
            raise typer.Exit(err.exit_code) from None


app = typer.Typer(
    name="bttui",
    cls=BttuiGroup,
    help="Run and study Barlow Twins pretraining and fine-tuning on medical images.",
    add_completion=False,
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="MIMeta-format data: synthetic datasets for demos and tests.", no_args_is_help=True)
index_app = typer.Typer(help="The run listing cache (<store>/.bttui/index.sqlite).", no_args_is_help=True)
config_app = typer.Typer(help="Experiment configs: resolve and inspect.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")
app.add_typer(config_app, name="config")

StoreOption = Annotated[
    Optional[Path],
    typer.Option(
        "--store",
        metavar="DIR",
        help="Run store directory (default: $BTTUI_STORE, the settings file's `store`, or ./runs).",
        show_default=False,
    ),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config key; VALUE is TOML, bare words are strings (repeatable).",
        show_default=False,
    ),
]


# ----------------------------------------------------------------- helpers


def _store_value(ctx: typer.Context, local: Path | None) -> Path | None:
    """The --store given to this command, else to the root command, else None."""
    if local is not None:
        return local
    obj = ctx.find_root().obj
    return obj.get("store") if isinstance(obj, dict) else None


def open_store(ctx: typer.Context, local: Path | None = None) -> Any:
    """The Store the command works on: --store > $BTTUI_STORE > settings > ./runs."""
    from bttui.runs.store import Store, resolve_store_root

    return Store(resolve_store_root(_store_value(ctx, local)))


def console(stderr: bool = False) -> Any:
    """A Rich console for command output (no automatic highlighting: data is shown as it is)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def print_json(obj: Any) -> None:
    """Machine-readable output: JSON on stdout, non-finite floats as the strings "nan"/"inf"/"-inf"."""
    from bttui.export import json_safe

    sys.stdout.write(json.dumps(json_safe(obj), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bttui {__version__}")
        raise typer.Exit()


# ----------------------------------------------------------------- root


def _theme_choice(value: str) -> str:
    from bttui.tui import THEME_CHOICES  # stdlib-only module: textual is imported by run_app

    if value.strip().lower() not in THEME_CHOICES:
        raise typer.BadParameter(f"{value!r} is not a theme; valid: {', '.join(THEME_CHOICES)} "
                                 "(more themes: ctrl+p, then 'Theme', inside the TUI).")
    return value.strip().lower()


@app.callback()
def _root(
    ctx: typer.Context,
    store: StoreOption = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    theme: Annotated[
        str, typer.Option("--theme", metavar="auto|dark|light|ansi", callback=_theme_choice,
                          help="TUI colours; auto: $BTTUI_THEME, else light or dark by the terminal's $COLORFGBG; "
                               "ansi: the terminal's own colours.")
    ] = "auto",
) -> None:
    """Run and study Barlow Twins pretraining and fine-tuning on medical images.

    Without a command: the TUI in a terminal, the run list when piped.
    """
    ctx.obj = {"store": store, "theme": theme}
    if ctx.invoked_subcommand is None:
        _no_command(ctx)


def _no_command(ctx: typer.Context) -> None:
    """What plain `bttui` does: the TUI in a terminal, the run list when piped."""
    import sys

    if sys.stdin.isatty() and sys.stdout.isatty():
        from bttui.runs.store import resolve_store_root
        from bttui.tui import run_app

        run_app(resolve_store_root(_store_value(ctx, None)), theme=ctx.obj.get("theme"))
        return
    _list_runs(ctx, None, as_json=False, show_all=False, statuses=None)


# ----------------------------------------------------------------- run


@app.command("run")
def run_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Experiment config (TOML).", show_default=False)],
    overrides: SetOption = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Start the run in the background and return.")] = False,
    slurm: Annotated[bool, typer.Option("--slurm", help="Submit the run as a Slurm batch job (sbatch) and return.")] = False,
    partition: Annotated[Optional[str], typer.Option("--partition", metavar="P", help="Slurm partition (with --slurm).",
                                                     show_default=False)] = None,
    time_limit: Annotated[Optional[str], typer.Option("--time", metavar="T", help="Slurm time limit, e.g. 1-00:00:00 "
                                                      "(with --slurm).", show_default=False)] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", metavar="N", help="GPUs of the Slurm job (default: "
                                                "resources.devices; with --slurm).", show_default=False)] = None,
    store: StoreOption = None,
) -> None:
    """Run an experiment: pretraining and fine-tuning cells, with live progress.

    Ctrl-C stops a foreground run gracefully (it checkpoints). Exit code 0 when the run completed, 1 otherwise.
    """
    if slurm or partition or time_limit or gpus is not None:
        if not slurm:
            raise BttuiError("--partition, --time and --gpus describe a Slurm job; add --slurm to submit one.")
        from bttui.runs.slurm import run_slurm

        raise typer.Exit(run_slurm(_store_value(ctx, store), config, list(overrides or []), partition=partition,
                                   time_limit=time_limit, gpus=gpus))
    from bttui.cli.run_cmd import run_experiment

    code = run_experiment(_store_value(ctx, store), config, list(overrides or []), detach=detach)
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------- ls


def _list_runs(ctx: typer.Context, store: Path | None, *, as_json: bool, show_all: bool,
               statuses: list[str] | None) -> None:
    from bttui.cli.views import list_rows

    wanted: set[str] = set()
    for item in statuses or []:
        wanted.update(s.strip() for s in item.split(",") if s.strip())
    if wanted:
        from bttui.runs.status import RUN_STATUSES

        unknown = sorted(wanted - set(RUN_STATUSES))
        if unknown:
            raise BttuiError(
                f"Unknown run status {', '.join(repr(u) for u in unknown)} for --status; "
                f"valid: {', '.join(RUN_STATUSES)}."
            )
    rows = list_rows(open_store(ctx, store))
    if wanted:
        rows = [r for r in rows if r.get("status") in wanted]
    if as_json:
        print_json(rows)
        return
    out = console()
    if not rows:
        out.print("no runs" + (" with that status" if wanted else "") + " in the store")
        return
    from bttui.render.tables import runs_table

    shown = rows if show_all else rows[:LS_PAGE]
    out.print(runs_table(shown, width=out.width))
    if len(rows) > len(shown):
        out.print(f"{len(rows) - len(shown)} more; use --all", style="dim")


@app.command("ls")
def ls_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of every matching run.")] = False,
    show_all: Annotated[bool, typer.Option("--all", "-a", help=f"Show every run, not just the newest {LS_PAGE}.")] = False,
    status: Annotated[
        Optional[list[str]],
        typer.Option("--status", metavar="STATUS", help="Only runs with this status (repeatable or comma-separated).",
                     show_default=False),
    ] = None,
    store: StoreOption = None,
) -> None:
    """List runs, newest first."""
    _list_runs(ctx, store, as_json=as_json, show_all=show_all, statuses=status)


# ----------------------------------------------------------------- show


@app.command("show")
def show_command(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run id, unique id prefix, or unique run name.",
                                       show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    embeddings: Annotated[Optional[str], typer.Option(
        "--embeddings", metavar="tsne|umap", help="Also draw each cell's test-feature embedding by class.")] = None,
    store: StoreOption = None,
) -> None:
    """Show one run: status, config summary, results and confusion matrices."""
    from bttui.cli.views import print_embeddings, print_run
    from bttui.export import run_json

    record = open_store(ctx, store).resolve(run)
    if as_json:
        print_json(run_json(record))
        return
    print_run(console(), record)
    if embeddings:
        print_embeddings(console(), record, embeddings)


# ----------------------------------------------------------------- data


@data_app.command("synth")
def data_synth_command(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="MIMeta root to write into.", show_default=False)],
    per_class: Annotated[int, typer.Option("--per-class", "--size", "-n", help="Images per class and dataset.")] = 40,
    image_size: Annotated[int, typer.Option("--image-size", help="Image side length in pixels.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same images).")] = 0,
    datasets: Annotated[
        Optional[str],
        typer.Option("--datasets", metavar="A,B", help="Comma-separated dataset ids (default: all).", show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace datasets that already exist.")] = False,
    store: StoreOption = None,
) -> None:
    """Write synthetic MIMeta-format datasets (organ views, CRC) for demos and tests."""
    from bttui.data.synth import synthesize

    ids = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else None
    written = synthesize(directory, datasets=ids, per_class=per_class, image_size=image_size, seed=seed,
                         overwrite=overwrite)
    out = console()
    from rich.text import Text

    out.print(Text(f"wrote {len(written)} dataset{'s' if len(written) != 1 else ''} under {directory}: "
                   + ", ".join(written)))


# ----------------------------------------------------------------- index


@index_app.command("rebuild")
def index_rebuild_command(ctx: typer.Context, store: StoreOption = None) -> None:
    """Rebuild the listing cache from the run directories."""
    from bttui.runs.index import Index

    st = open_store(ctx, store)
    index = Index(st)
    result = index.rebuild()
    count = result if isinstance(result, int) and not isinstance(result, bool) else len(index.rows())
    from rich.text import Text

    console().print(Text(f"indexed {count} run{'s' if count != 1 else ''} in {st.root}"))


# ----------------------------------------------------------------- config


@config_app.command("show")
def config_show_command(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Experiment config (TOML).", show_default=False)],
    overrides: SetOption = None,
    as_toml: Annotated[bool, typer.Option("--toml", help="Print the resolved config as TOML.")] = False,
    store: StoreOption = None,
) -> None:
    """Print every resolved config key, its value and where the value came from."""
    from bttui.config.load import config_to_toml, load_config_with_sources

    cfg, sources = load_config_with_sources(config, list(overrides or []))
    if as_toml:
        sys.stdout.write(config_to_toml(cfg))
        sys.stdout.flush()
        return
    from bttui.cli.views import config_items
    from bttui.render.tables import config_sources_table

    console().print(config_sources_table(config_items(cfg, sources), title=str(config)))


# ----------------------------------------------------------------- more command modules
# Each module defines `register(app, groups)` (groups: the sub-apps by name) and keeps its
# module-level imports as light as this file's. One line per module, in this block only.
GROUPS = {"data": data_app, "index": index_app, "config": config_app}
from bttui.cli import results_cmd; results_cmd.register(app, GROUPS)
from bttui.cli import jobs_cmd; jobs_cmd.register(app, GROUPS)
from bttui.cli import data_cmd; data_cmd.register(app, GROUPS)
from bttui.cli import sweep_cmd; sweep_cmd.register(app, GROUPS)
from bttui.cli import disk_cmd; disk_cmd.register(app, GROUPS)
