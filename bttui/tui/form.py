"""The experiment form's model: config schema fields <-> widget values, and form values -> a config dict (no Textual).

Widgets hold text (numbers, TOML arrays), booleans (switches) or a choice; this
module turns an ``ExperimentConfig`` into those values and back into the nested
dict that ``bttui.config.config_from_dict`` validates, so the form reports
exactly the CLI's messages. Only what cannot reach the loader as a value (a
TOML array that does not parse) is reported here.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bttui.config.load import FIELDS, FieldInfo
from bttui.config.schema import OPTIONAL_SECTIONS, SECTIONS
from bttui.errors import BttuiError

# Keys holding filesystem paths: shown relative to the working directory when under it
# (the loader resolves relative paths against the working directory, so both mean the same file).
PATH_KEYS = ("data.root", "finetune.imagenet_weights")
# List fields that get a picker of dataset ids read from the data root.
DATASET_KEYS = ("pretrain.datasets", "finetune.datasets")
GPU_KEY = "resources.gpus"
# The "(none)" entry of a choice that may be unset (preset); Select values must be hashable and not None.
NONE_CHOICE = ""


class FormError(BttuiError):
    """A form value the loader cannot even be handed (a list field whose text is not a TOML array)."""


@dataclass(frozen=True)
class Section:
    """One block of the form: top-level keys (name None) or a [section]."""

    name: str | None
    title: str
    doc: str
    optional: bool
    fields: tuple[FieldInfo, ...]


def sections() -> list[Section]:
    """Every config field, grouped as the TOML file is: top-level keys, then the sections in schema order."""
    out = [Section(None, "general", "Name, seed and preset", False,
                   tuple(info for info in FIELDS.values() if info.section is None))]
    for name, cls in SECTIONS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        out.append(Section(name, f"[{name}]", doc, name in OPTIONAL_SECTIONS,
                           tuple(info for info in FIELDS.values() if info.section == name)))
    return out


def widget_kind(info: FieldInfo) -> str:
    """'switch', 'select', 'int', 'float' or 'text' (strings, TOML arrays, gpus)."""
    if info.kind == "bool":
        return "switch"
    if info.choices:
        return "select"
    if info.kind in ("int", "float"):
        return info.kind
    return "text"


def toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # repr round-trips floats exactly
    return str(value)


def toml_array(values: Any) -> str:
    return "[" + ", ".join(toml_scalar(v) for v in values) + "]"


def show_path(value: str, cwd: Path) -> str:
    """A path as the form shows it: relative to ``cwd`` when inside it, else as given."""
    p = Path(value)
    if not p.is_absolute():
        return value
    try:
        rel = p.relative_to(cwd)
    except ValueError:
        return value
    return str(rel) if str(rel) != "." else "."


def display_value(info: FieldInfo, value: Any, cwd: Path | None = None) -> Any:
    """What the widget of ``info`` holds for config value ``value``."""
    kind = widget_kind(info)
    if kind == "switch":
        return bool(value)
    if kind == "select":
        return NONE_CHOICE if value is None else value
    if value is None:
        return ""
    if info.kind == "gpus":
        return "auto" if value == "auto" else toml_array(value if isinstance(value, list) else [value])
    if info.kind.startswith("list"):
        return toml_array(value)
    if info.kind == "float":
        return toml_scalar(float(value))
    if info.key in PATH_KEYS and cwd is not None:
        return show_path(str(value), cwd)
    return str(value)


def config_values(cfg: Any, cwd: Path | None = None) -> tuple[dict[str, Any], dict[str, bool]]:
    """Widget values for every key of ``cfg`` (absent optional sections show the schema defaults) and which
    optional sections are on."""
    values: dict[str, Any] = {}
    enabled: dict[str, bool] = {}
    for sec in sections():
        obj = cfg if sec.name is None else getattr(cfg, sec.name)
        if sec.optional:
            enabled[sec.name] = obj is not None
            if obj is None:
                obj = SECTIONS[sec.name]()
        for info in sec.fields:
            values[info.key] = display_value(info, getattr(obj, info.name), cwd)
    return values, enabled


def _parse_toml_value(info: FieldInfo, text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        example = {"list[str]": '["a", "b"]', "list[int]": "[0, 1]", "list[float]": "[0.1, 1.0]",
                   "gpus": "auto or [0, 1]"}.get(info.kind, "[...]")
        raise FormError(f"form: {info.key} = {text!r} is not a TOML value; write it as {example} "
                        f"({str(exc).splitlines()[0]})") from None


def parse_value(info: FieldInfo, raw: Any) -> tuple[bool, Any]:
    """(present, value) for the loader from a widget value; absent means "leave the key out" (unset optional)."""
    kind = widget_kind(info)
    if kind == "switch":
        return True, bool(raw)
    if kind == "select":
        return (False, None) if raw in (NONE_CHOICE, None) else (True, raw)
    text = "" if raw is None else str(raw)
    if info.kind == "str?":
        return (False, None) if not text.strip() else (True, text)
    if info.kind == "str":
        return True, text
    stripped = text.strip()
    if info.kind == "int":
        for convert in (int, float):
            try:
                return True, convert(stripped)
            except ValueError:
                pass
        return True, text  # the loader says "must be a whole number, got ..."
    if info.kind == "float":
        try:
            return True, float(stripped)
        except ValueError:
            return True, text
    if info.kind == "gpus" and stripped in ("auto", '"auto"'):
        return True, "auto"
    if not stripped:
        return True, []
    return True, _parse_toml_value(info, stripped)


def form_dict(values: dict[str, Any], enabled: dict[str, bool]) -> dict:
    """The nested config dict of the form's values (disabled optional sections left out)."""
    out: dict[str, Any] = {}
    for sec in sections():
        if sec.optional and not enabled.get(sec.name, False):
            continue
        target = out if sec.name is None else out.setdefault(sec.name, {})
        for info in sec.fields:
            if info.key not in values:
                continue
            present, value = parse_value(info, values[info.key])
            if present:
                target[info.name] = value
    return out


def parse_list_text(text: str) -> list | None:
    """A list typed in an Input, or None when it is not (yet) a TOML array."""
    try:
        value = tomllib.loads(f"v = {text.strip() or '[]'}")["v"]
    except tomllib.TOMLDecodeError:
        return None
    return value if isinstance(value, list) else None


def merge_picked(current: list, options: list, picked: list) -> list:
    """The list after a picker change: kept entries in their order, entries the picker does not know kept,
    newly picked ones appended in the picker's order."""
    picked_set = set(picked)
    kept = [v for v in current if v in picked_set or v not in options]
    kept_set = set(kept)
    return kept + [v for v in options if v in picked_set and v not in kept_set]


def experiment_files(experiments_dir: Path) -> list[Path]:
    """Shipped and saved experiments: ``<dir>/*.toml`` then ``<dir>/*/*.toml`` (e.g. paper/), sorted."""
    if not experiments_dir.is_dir():
        return []
    top = sorted(p for p in experiments_dir.glob("*.toml") if p.is_file())
    nested = sorted(p for p in experiments_dir.glob("*/*.toml") if p.is_file() and not p.parent.name.startswith("."))
    return top + nested


def display_file(path: Path, cwd: Path) -> str:
    return show_path(os.path.abspath(path), cwd)
