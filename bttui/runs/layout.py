"""Run ids, name slugs and the fixed file layout of one run directory (format version 1)."""

from __future__ import annotations

import datetime as _dt
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

SLUG_MAX = 40
"""Longest slug kept in a run id; ids stay readable in an 80-column list."""

RUN_ID_RE = re.compile(r"^(\d{8})-(\d{6})-([a-z0-9-]{1,%d})-([0-9a-f]{4})$" % SLUG_MAX)
"""What `new_run_id` produces: `YYYYMMDD-HHMMSS-<slug>-<4 hex>`."""

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(name: object) -> str:
    """The name as lowercase `[a-z0-9-]`, at most 40 characters, never empty ("run").

    Accents are dropped first ("Übersicht" -> "ubersicht"); every other run of
    characters outside `[a-z0-9]` (slashes, dots, NUL, spaces, CJK) becomes one
    "-", so no name can put a path separator or ".." into a run id.
    """
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    slug = _NOT_SLUG.sub("-", text).strip("-")
    slug = slug[:SLUG_MAX].strip("-")
    return slug or "run"


def _utc(now: _dt.datetime | float | None) -> _dt.datetime:
    if now is None:
        return _dt.datetime.now(_dt.timezone.utc)
    if isinstance(now, (int, float)):
        return _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
    if now.tzinfo is None:  # a naive datetime is taken to be UTC already
        return now.replace(tzinfo=_dt.timezone.utc)
    return now.astimezone(_dt.timezone.utc)


def new_run_id(name: object, now: _dt.datetime | float | None = None) -> str:
    """`YYYYMMDD-HHMMSS-<slug>-<4 hex>` in UTC; ids sort by creation time as plain strings."""
    stamp = _utc(now).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{slugify(name)}-{secrets.token_hex(2)}"


def iso_utc(now: _dt.datetime | float | None = None) -> str:
    """ISO 8601 UTC with a "Z", to the second: the `created` field of run.json."""
    return _utc(now).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_safe_component(name: str) -> bool:
    """True when `name` is one visible path component: no separator, NUL, "." or ".." and no leading dot."""
    return (
        isinstance(name, str)
        and bool(name)
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and not name.startswith(".")
        and len(name.encode("utf-8", "surrogatepass")) <= 255
    )


@dataclass(frozen=True)
class RunPaths:
    """Where each file of one run directory lives (see docs/design.md, "Run directory")."""

    dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "dir", Path(self.dir))

    @property
    def id(self) -> str:
        """The run id: the directory's name."""
        return self.dir.name

    @property
    def run_json(self) -> Path:
        return self.dir / "run.json"

    @property
    def config_toml(self) -> Path:
        return self.dir / "config.toml"

    @property
    def events(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def status(self) -> Path:
        return self.dir / "status.json"

    @property
    def summary(self) -> Path:
        return self.dir / "summary.json"

    @property
    def log(self) -> Path:
        return self.dir / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def artifacts(self) -> Path:
        return self.dir / "artifacts"
