"""Is the process behind a run still there? Boot id, host name, and pid + start time from /proc.

A pid alone is not enough: pids are reused, so a run records its trainer's
start time (field 22 of /proc/<pid>/stat, clock ticks since boot) and the
boot id; the same pid with another start time is another process.
"""

from __future__ import annotations

import errno
import os
import socket
from functools import lru_cache
from pathlib import Path

_PROC = Path("/proc")


@lru_cache(maxsize=1)
def _boot_id_cached() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def boot_id() -> str | None:
    """This boot's id (Linux); None where the kernel does not provide one."""
    return _boot_id_cached()


def hostname() -> str:
    """This machine's host name."""
    return socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(int(pid)) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ")": split after the last ")".
    close = text.rfind(")")
    if close < 0:
        return None
    return text[close + 2:].split()  # fields 3 .. N


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None if it is gone or a zombie (exited, not reaped)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    fields = _stat_fields(pid)
    if not fields or len(fields) < 20:
        return None
    if fields[0] in ("Z", "X"):  # state: zombie or dead
        return None
    try:
        return int(fields[19])  # field 22 overall
    except ValueError:
        return None


def _kill_probe(pid: int) -> bool:
    # Fallback without /proc (macOS): signal 0 checks existence only.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as err:
        return err.errno != errno.ESRCH
    return True


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when `start` is given, started at that tick (not a reused pid)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if not _PROC.joinpath("self").exists():
        return _kill_probe(pid)
    now_start = process_start_time(pid)
    if now_start is None:
        return False
    return start is None or int(start) == now_start


is_process_alive = pid_alive
"""Alias under the name the package overview in docs/design.md uses."""
