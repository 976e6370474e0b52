"""User-facing errors: one clear paragraph, exit code 2, never a traceback."""

from __future__ import annotations


class BttuiError(Exception):
    """An error caused by the user's input (config, data, arguments).

    The CLI prints ``str(err)`` as one paragraph and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
