"""The bttui command line: `main()` (the console script) and the Typer `app`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bttui.cli.app import app, report_error, storage_error
from bttui.errors import BttuiError

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the app; a BttuiError anywhere becomes one paragraph on stderr and its exit code, never a traceback."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="bttui")
    except BttuiError as err:
        # The root group already reports errors raised inside commands; this
        # catches the rest (e.g. raised while building the context).
        report_error(err)
        sys.exit(err.exit_code)
    except OSError as exc:  # a read-only, full or forbidden store outside a command (same as the root group)
        err = storage_error(exc)
        if err is None:
            raise
        report_error(err)
        sys.exit(err.exit_code)
