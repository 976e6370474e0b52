"""Atomic file writes (temp file in the same folder, fsync, rename) and forgiving JSON reads.

JSON written here is strict JSON: NaN and infinities, which `json` would emit
as the invalid tokens NaN/Infinity, are written as the strings "nan", "inf"
and "-inf" instead (a diverged loss must not make status.json unreadable).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from bttui.faults import fault_point

# Regular-file mode before the umask, as open() uses: created files honour the user's umask.
_FILE_MODE = 0o666


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by "nan"/"inf"/"-inf" (dicts, lists and tuples walked)."""
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _default(value: Any) -> Any:
    # numpy / torch scalars and arrays reach us from the trainer; paths from everyone.
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    if isinstance(value, (set, frozenset)):
        return json_safe(sorted(value, key=repr))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of `value` (non-finite floats as strings, numpy/torch scalars and paths converted)."""
    # ensure_ascii: paths with undecodable bytes carry lone surrogates, which UTF-8 cannot encode.
    return json.dumps(json_safe(value), default=_default, allow_nan=False, ensure_ascii=True, indent=indent,
                      separators=None if indent is not None else (",", ":"))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse directory fds, which only costs durability.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` so readers see the old file or the new one, never a mix or a stub."""
    target = Path(path)
    folder = target.parent
    while True:
        tmp = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            break
        except FileExistsError:
            continue
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        fault_point("atomic.temp_written")
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fault_point("atomic.replaced")
    _fsync_dir(folder)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with UTF-8 `text` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Replace `path` with `obj` as indented strict JSON (see module docstring), atomically."""
    write_text_atomic(path, dumps(obj, indent=1) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON in `path`, or `default` when it is missing, unreadable or not valid JSON.

    Run files are written atomically, so invalid content means a hand edit or a
    damaged copy; browsing must go on, so this never raises.
    """
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError):
        return default
