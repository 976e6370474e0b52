"""Load, validate and write experiment configs: TOML in, a typed ExperimentConfig out, every mistake one ConfigError paragraph."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from bttui.config.init_spec import (
    INIT_GRAMMAR,
    PROBE_LAYERS,
    InitSpec,
    InitSpecError,
    parse_init,
    parse_strategy,
)
from bttui.config.presets import PRESETS
from bttui.config.schema import OPTIONAL_SECTIONS, SECTIONS, ExperimentConfig
from bttui.errors import BttuiError
from bttui.render.format import inline_value

if TYPE_CHECKING:
    from bttui.config.settings import MachineSettings


class ConfigError(BttuiError):
    """A config file, override or settings file that cannot be used; the message says where, what and what is valid."""


# Caps for fields the schema leaves open above: they keep absurd values (epochs = 10**30) from
# reaching the trainer, far above anything a real run uses.
INT_CAP = 1_000_000
FLOAT_CAP = 1e9
SEED_MAX = 2**32 - 1  # numpy's seed range
PROJECTOR_MAX = 65_536  # an 8192-wide projector is the largest published; 65536^2 floats = 16 GiB
EXTRA_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, SEED_MAX),
    "finetune.seeds": (0, SEED_MAX),
    "pretrain.projector": (1, PROJECTOR_MAX),
    "resources.gpus": (0, 1023),
    "resources.devices": (None, 1024),
    "resources.nodes": (None, 4096),
    "resources.threads": (None, 4096),
}
"""Extra (min, max) per dotted key, for lists applied to each element."""

SPLITS = ("train", "val")
EMBEDDINGS = ("tsne", "umap")
GRID_LISTS = ("finetune.datasets", "finetune.init", "finetune.strategy", "finetune.label_fractions", "finetune.seeds")
"""Lists that span the fine-tuning grid: never empty, never with repeats (cell ids would collide)."""
_DATASET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_KIND_NAMES = {
    "str": "a string",
    "str?": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "list[str]": "a list of strings",
    "list[int]": "a list of whole numbers",
    "list[float]": "a list of numbers",
    "gpus": '"auto" or a list of GPU indices (whole numbers >= 0)',
}
_ANNOTATION_KINDS = {
    "str": "str", "int": "int", "float": "float", "bool": "bool",
    "list[str]": "list[str]", "list[int]": "list[int]", "list[float]": "list[float]",
    "str | None": "str?", "Optional[str]": "str?", "Any": "gpus",
}


@dataclass(frozen=True)
class FieldInfo:
    """One config key as the loader sees it: dotted name, value kind, default and validation bounds."""

    key: str
    section: str | None
    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple | None
    minimum: float | None
    maximum: float | None
    exclusive_min: bool


def field_infos(cls: type, section: str | None) -> dict[str, FieldInfo]:
    """The FieldInfo of every plain (non-section) field of a schema dataclass, keyed by dotted key."""
    out: dict[str, FieldInfo] = {}
    for fld in dataclasses.fields(cls):
        if section is None and fld.name in SECTIONS:
            continue
        annotation = fld.type if isinstance(fld.type, str) else getattr(fld.type, "__name__", str(fld.type))
        kind = _ANNOTATION_KINDS.get(annotation.replace("typing.", ""))
        if kind is None:
            raise TypeError(f"schema field {cls.__name__}.{fld.name} has an unsupported type {annotation!r}")
        default = fld.default_factory() if fld.default is dataclasses.MISSING else fld.default
        meta = fld.metadata
        key = fld.name if section is None else f"{section}.{fld.name}"
        out[key] = FieldInfo(key, section, fld.name, kind, default, meta.get("doc", ""), meta.get("choices"),
                             meta.get("min"), meta.get("max"), bool(meta.get("exclusive_min")))
    return out


FIELDS: dict[str, FieldInfo] = field_infos(ExperimentConfig, None)
for _section, _cls in SECTIONS.items():
    FIELDS.update(field_infos(_cls, _section))
TOP_LEVEL_KEYS = tuple(key for key in FIELDS if "." not in key)


# ---------------------------------------------------------------- messages


def _fail(where: str | None, message: str) -> None:
    raise ConfigError(f"{where}: {message}" if where else message)


def _quote(text: Any) -> str:
    """A key or word quoted for a message: JSON style, one line, at most 80 characters."""
    out = json.dumps(str(text), ensure_ascii=False)
    return out if len(out) <= 80 else out[:76] + '..."'


def _show(value: Any) -> str:
    """A value as a message shows it: TOML-like, one line, at most 60 characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        # str() of integers over 4300 digits raises; nobody wants to read them anyway.
        return f"{'-' if value < 0 else ''}<a {int(value.bit_length() * 0.30103) + 1}-digit number>"
    try:
        text = toml_value(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"


def unknown_key_message(key: str, valid: Sequence[str], scope: str) -> str:
    """'unknown key "x"; did you mean "y"? Valid keys in <scope>: ...' for any flat list of valid keys."""
    probe = str(key)[:100]  # difflib is quadratic; a 100 kB key must not hang the loader
    match = difflib.get_close_matches(probe, list(valid), n=1, cutoff=0.6)
    text = f"unknown key {_quote(key)}"
    text += f"; did you mean {_quote(match[0])}?" if match else "."
    return f"{text} Valid keys in {scope}: {', '.join(valid)}."


def config_unknown_key_message(key: str) -> str:
    """The unknown-key message for the experiment config: suggestion, then the section's valid keys."""
    key = str(key)
    head, _, leaf = key.partition(".")
    section = head if leaf and head in SECTIONS else None
    probe = key[:100]
    same_leaf = [k for k in FIELDS if "." in k and k.split(".", 1)[1] == (leaf or head)]
    match = same_leaf[:1] or difflib.get_close_matches(probe, [*FIELDS, *SECTIONS], n=1, cutoff=0.6)
    text = f"unknown key {_quote(key)}"
    text += f"; did you mean {_quote(match[0])}?" if match else "."
    if section is not None:
        names = [info.name for info in FIELDS.values() if info.section == section]
        return f"{text} Valid keys in [{section}]: {', '.join(names)}."
    sections = ", ".join(f"[{name}]" for name in SECTIONS)
    return f"{text} Valid top-level keys: {', '.join(TOP_LEVEL_KEYS)}; sections: {sections}."


# ---------------------------------------------------------------- value checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(key: str, value: str, where: str | None) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(where, f"{key} contains characters that are not valid text (undecodable bytes)")


def _bound(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_number(info: FieldInfo, label: str, value: Any, kind: str, where: str | None) -> Any:
    """Type and range check of one number; returns it as float for float fields."""
    if kind == "int":
        if not _is_int(value):
            _fail(where, f"{label} must be a whole number, got {_show(value)} ({_type_name(value)})")
    else:
        if not (_is_int(value) or isinstance(value, float)):
            _fail(where, f"{label} must be a number, got {_show(value)} ({_type_name(value)})")
        if isinstance(value, float) and not math.isfinite(value):
            _fail(where, f"{label} must be a finite number, got {_show(value)}")
    low, high = EXTRA_LIMITS.get(info.key, (None, None))
    low = info.minimum if low is None else low
    high = info.maximum if high is None else high
    if high is None:
        high = INT_CAP if kind == "int" else FLOAT_CAP
    if low is not None and (value < low or (info.exclusive_min and value == low)):
        bound = f"> {_bound(low)}" if info.exclusive_min else f">= {_bound(low)}"
        _fail(where, f"{label} must be {bound}, got {_show(value)}")
    if value > high:
        _fail(where, f"{label} must be <= {_bound(high)}, got {_show(value)}")
    if kind == "float" and _is_int(value):
        return float(value)
    return value


def _check_list(info: FieldInfo, value: Any, where: str | None) -> list:
    if not isinstance(value, (list, tuple)):
        _fail(where, f"{info.key} must be {_KIND_NAMES[info.kind]}, got {_show(value)} ({_type_name(value)})")
    element_kind = info.kind[5:-1]
    out = []
    for index, item in enumerate(value):
        label = f"{info.key}[{index}]"
        if element_kind == "str":
            if not isinstance(item, str):
                _fail(where, f"{label} must be a string, got {_show(item)} ({_type_name(item)}); "
                             f"{info.key} must be {_KIND_NAMES[info.kind]}")
            _check_text(label, item, where)
            out.append(item)
        else:
            # Element bounds come only from EXTRA_LIMITS (label fractions have their own rule).
            element = dataclasses.replace(info, minimum=None, maximum=None, exclusive_min=False)
            out.append(_check_number(element, label, item, element_kind, where))
    return out


def check_value(info: FieldInfo, value: Any, where: str | None) -> Any:
    """Type, range and per-key rules for one value; returns it normalized (int -> float, canonical inits)."""
    key = info.key
    kind = info.kind
    if kind in ("str", "str?"):
        if value is None and kind == "str?":
            return None
        if not isinstance(value, str):
            _fail(where, f"{key} must be a string, got {_show(value)} ({_type_name(value)})")
        _check_text(key, value, where)
    elif kind == "bool":
        if not isinstance(value, bool):
            _fail(where, f"{key} must be true or false, got {_show(value)} ({_type_name(value)})")
    elif kind in ("int", "float"):
        value = _check_number(info, key, value, kind, where)
    elif kind == "gpus":
        if value != "auto":
            if not isinstance(value, (list, tuple)) or not value:
                _fail(where, f"{key} must be {_KIND_NAMES['gpus']}, e.g. [0, 1], got {_show(value)} ({_type_name(value)})")
            value = _check_list(dataclasses.replace(info, kind="list[int]"), value, where)
            _no_repeats(key, value, where)
    else:
        value = _check_list(info, value, where)
    if info.choices is not None and value not in info.choices:
        shown = ", ".join(_quote(c) for c in info.choices if c is not None)
        match = difflib.get_close_matches(str(value)[:100], [c for c in info.choices if c is not None], n=1)
        hint = f"; did you mean {_quote(match[0])}?" if match else ""
        _fail(where, f"{key} must be one of {shown}, got {_show(value)}{hint}")
    rule = RULES.get(key)
    return rule(value, where) if rule is not None else value


def _no_repeats(key: str, values: list, where: str | None, shown: Callable[[Any], Any] = lambda v: v) -> None:
    seen: set = set()
    for value in values:
        marker = shown(value)
        if marker in seen:
            _fail(where, f"{key} lists {_show(value)} twice; each value may appear once")
        seen.add(marker)


def _non_empty_text(key: str) -> Callable[[Any, str | None], Any]:
    def rule(value: Any, where: str | None) -> Any:
        if value is not None and not value.strip():
            _fail(where, f"{key} must not be empty")
        if value is not None and "\x00" in value:
            _fail(where, f"{key} must not contain NUL characters")
        return value
    return rule


def _datasets_rule(key: str) -> Callable[[list, str | None], list]:
    def rule(value: list, where: str | None) -> list:
        if not value:
            _fail(where, f"{key} must list at least one MIMeta dataset id, e.g. [\"organs_sagittal\"]")
        for item in value:
            if not _DATASET_ID.match(item):
                _fail(where, f"{key}: {_quote(item)} is not a dataset id (letters, digits, '_', '.', '-', "
                             "starting with a letter or digit), e.g. \"organs_sagittal\"")
        _no_repeats(key, value, where)
        return value
    return rule


def _splits_rule(value: list, where: str | None) -> list:
    if not value:
        _fail(where, "pretrain.splits must list at least one split: \"train\", optionally \"val\"")
    for item in value:
        if item == "test":
            _fail(where, "pretrain.splits must not include \"test\": the test split is held out for the final "
                         "accuracies, and pretraining on it would leak test images into the representation; "
                         "use [\"train\"] or [\"train\", \"val\"]")
        if item not in SPLITS:
            _fail(where, f"pretrain.splits: unknown split {_quote(item)}; valid splits: \"train\", \"val\"")
    _no_repeats("pretrain.splits", value, where)
    return value


def _projector_rule(value: list, where: str | None) -> list:
    if not value:
        _fail(where, "pretrain.projector must list at least one layer width, e.g. [2048, 2048, 2048]")
    return value


def _spec_list_rule(key: str, noun: str, parse: Callable[[str], Any], grammar: str) -> Callable[[list, str | None], list]:
    """A non-empty list of init or strategy specs, each written back in its canonical form, without repeats."""
    def rule(value: list, where: str | None) -> list:
        if not value:
            _fail(where, f"{key} must list at least one {noun}: {grammar}")
        out = []
        for item in value:
            try:
                out.append(str(parse(item)))
            except InitSpecError as err:
                _fail(where, f"{key}: {err}")
        _no_repeats(key, out, where)
        return out
    return rule


def _fractions_rule(value: list, where: str | None) -> list:
    if not value:
        _fail(where, "finetune.label_fractions must list at least one fraction in (0, 1], e.g. [0.1, 1.0]")
    for index, item in enumerate(value):
        if not 0.0 < item <= 1.0:
            _fail(where, f"finetune.label_fractions[{index}] must be in (0, 1] (a fraction of the training labels), "
                         f"got {_show(item)}")
    # Cell ids print fractions with :g, so two fractions equal to 6 digits would share a cell id.
    _no_repeats("finetune.label_fractions", value, where, lambda v: f"{v:g}")
    return value


def _seeds_rule(value: list, where: str | None) -> list:
    if not value:
        _fail(where, "finetune.seeds must list at least one seed, e.g. [0]")
    _no_repeats("finetune.seeds", value, where)
    return value


def _choice_list_rule(key: str, valid: Sequence[str]) -> Callable[[list, str | None], list]:
    def rule(value: list, where: str | None) -> list:
        for item in value:
            if item not in valid:
                _fail(where, f"{key}: unknown value {_quote(item)}; valid values: {', '.join(valid)}")
        _no_repeats(key, value, where)
        return value
    return rule


RULES: dict[str, Callable[[Any, str | None], Any]] = {
    "name": _non_empty_text("name"),
    "data.root": _non_empty_text("data.root"),
    "pretrain.datasets": _datasets_rule("pretrain.datasets"),
    "pretrain.splits": _splits_rule,
    "pretrain.projector": _projector_rule,
    "finetune.datasets": _datasets_rule("finetune.datasets"),
    "finetune.task": _non_empty_text("finetune.task"),
    "finetune.init": _spec_list_rule("finetune.init", "init", parse_init, INIT_GRAMMAR),
    "finetune.strategy": _spec_list_rule("finetune.strategy", "strategy", parse_strategy,
                                         "linear | full | surgical:<layers>"),
    "finetune.label_fractions": _fractions_rule,
    "finetune.seeds": _seeds_rule,
    "finetune.probe_layers": _choice_list_rule("finetune.probe_layers", PROBE_LAYERS),
    "finetune.embeddings": _choice_list_rule("finetune.embeddings", EMBEDDINGS),
    "finetune.imagenet_weights": _non_empty_text("finetune.imagenet_weights"),
}


# ---------------------------------------------------------------- TOML reading


_BARE = r"[A-Za-z0-9_-]+"
_KEY_PART = rf"""(?:{_BARE}|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_KEY})\s*\]\]?")
_ASSIGN_RE = re.compile(rf"^\s*({_KEY})\s*=")
_PART_RE = re.compile(_KEY_PART)


def _split_key(text: str) -> list[str]:
    return [part[1:-1] if part[0] in "\"'" else part for part in _PART_RE.findall(text)]


def key_lines(text: str) -> dict[str, int]:
    """The first line (1-based) defining each dotted key or table, found by scanning: tomllib gives no positions."""
    lines: dict[str, int] = {}
    table: list[str] = []
    open_string: str | None = None
    # tomllib counts lines by "\n" only; str.splitlines would also split on \x0b, \x1c, ...
    for number, line in enumerate(text.split("\n"), 1):
        if open_string is not None:
            if open_string in line:
                open_string = None
            continue
        match = _HEADER_RE.match(line)
        if match:
            table = _split_key(match.group(1))
            lines.setdefault(".".join(table), number)
            continue
        match = _ASSIGN_RE.match(line)
        if not match:
            continue
        parts = table + _split_key(match.group(1))
        for end in range(1, len(parts) + 1):
            lines.setdefault(".".join(parts[:end]), number)
        rest = line[match.end():]
        for delimiter in ('"""', "'''"):
            if rest.count(delimiter) % 2 == 1:
                open_string = delimiter
                break
    return lines


def line_of(lines: dict[str, int], key: str) -> int | None:
    """The line of a dotted key, else of its nearest enclosing table (inline tables, arrays of tables)."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        number = lines.get(".".join(parts[:end]))
        if number is not None:
            return number
    return None


def parse_toml(text: str, source: str) -> dict:
    """tomllib.loads with every failure (syntax, 5000-digit integers, deep nesting) as a ConfigError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        _fail(source, f"not valid TOML: {err}")
    except RecursionError:
        _fail(source, "not valid TOML here: arrays or tables are nested too deeply")
    except (ValueError, TypeError) as err:
        _fail(source, f"cannot be read as TOML: {err}")
    raise AssertionError("unreachable")


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """Read a UTF-8 text file; every failure is a ConfigError naming the file."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except FileNotFoundError:
        _fail(None, f"{what} {name} does not exist (looked for {os.path.abspath(name)})")
    except IsADirectoryError:
        _fail(None, f"{what} {name} is a directory, not a TOML file")
    except (OSError, ValueError) as err:
        _fail(None, f"{what} {name} cannot be read: {getattr(err, 'strerror', None) or err}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        _fail(name, f"not UTF-8 text (byte {err.start}); TOML files must be UTF-8")
    raise AssertionError("unreachable")


def parse_override(item: Any) -> tuple[str, Any]:
    """Split one `KEY=VALUE` override; VALUE is a TOML value, or a bare string when it does not parse."""
    if not isinstance(item, str) or "=" not in item:
        _fail("--set", f"expects KEY=VALUE (e.g. pretrain.epochs=10), got {_quote(item)}")
    key, _, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if not text or "\n" in text or "\r" in text:
        return key, text
    try:
        parsed = tomllib.loads(f"v = {text}")
    except Exception:  # noqa: BLE001 - anything TOML cannot read is meant as a bare word
        return key, text
    return (key, parsed["v"]) if set(parsed) == {"v"} else (key, text)


# ---------------------------------------------------------------- assembling a config


def _resolve_path(value: str, base: Path) -> str:
    return os.path.abspath(os.path.join(base, os.path.expanduser(value)))


def _path_exists(value: str) -> bool:
    try:
        return os.path.exists(value)
    except (ValueError, OSError):
        return False


def _flatten_tree(tree: Any, where: Callable[[str], str | None]) -> tuple[dict[str, Any], set[str]]:
    """Dotted key -> value of a parsed TOML document or dict, refusing unknown keys; also the sections it has."""
    if not isinstance(tree, dict):
        _fail(where(""), f"a config must be a table of keys, got {_show(tree)} ({_type_name(tree)})")
    values: dict[str, Any] = {}
    sections: set[str] = set()
    for key, value in tree.items():
        key = str(key)
        if key in SECTIONS:
            if not isinstance(value, dict):
                _fail(where(key), f"{_quote(key)} is a section: write it as a [{key}] table, "
                                  f"got {_show(value)} ({_type_name(value)})")
            sections.add(key)
            for sub, sub_value in value.items():
                dotted = f"{key}.{sub}"
                if dotted not in FIELDS:
                    _fail(where(dotted), config_unknown_key_message(dotted))
                values[dotted] = sub_value
        elif key in TOP_LEVEL_KEYS:
            values[key] = value
        else:
            _fail(where(key), config_unknown_key_message(key))
    return values, sections


def _assemble(tree: Any, *, source: str, lines: dict[str, int] | None, base_dir: Path | None,
              overrides: Sequence[str], settings: MachineSettings | None,
              check_paths: bool) -> tuple[ExperimentConfig, dict[str, str]]:
    """Layer defaults < settings < preset < file < --set, check every value, resolve paths, build the config."""
    cwd = Path.cwd()

    def file_where(key: str) -> str:
        number = line_of(lines, key) if lines is not None and key else None
        return f"{source}:{number}" if number is not None else source

    file_values, present = _flatten_tree(tree, file_where)
    if overrides is None:
        overrides = ()
    if isinstance(overrides, str):
        overrides = [overrides]
    parsed_overrides: list[tuple[str, Any]] = []
    for item in overrides:
        key, value = parse_override(item)
        if key in SECTIONS:
            first = next(info.name for info in FIELDS.values() if info.section == key)
            _fail("--set", f"{_quote(key)} is a section; set one of its keys, e.g. {key}.{first}=...")
        if key not in FIELDS:
            _fail("--set", config_unknown_key_message(key))
        info = FIELDS[key]
        # On the command line `finetune.seeds=3` means [3]; a list field never takes a scalar otherwise.
        if info.kind.startswith("list") or (info.kind == "gpus" and value != "auto"):
            if not isinstance(value, list):
                value = [value]
        parsed_overrides.append((key, value))
    for key in [*file_values, *(key for key, _ in parsed_overrides)]:
        if FIELDS[key].section is not None:
            present.add(FIELDS[key].section)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    wheres: dict[str, str | None] = {}

    def put(key: str, value: Any, label: str, where: str | None) -> None:
        section = FIELDS[key].section
        if section in OPTIONAL_SECTIONS and section not in present:
            return  # a preset or settings value never creates a stage the file left out
        values[key] = list(value) if isinstance(value, list) else value
        sources[key] = label
        wheres[key] = where

    for key, info in FIELDS.items():
        put(key, info.default, "default", file_where(key))
    if settings is not None:
        settings_label = f"settings:{settings.path}" if getattr(settings, "path", None) else "settings"
        if settings.data_root:
            put("data.root", settings.data_root, settings_label, settings_label)
        if settings.imagenet_weights:
            put("finetune.imagenet_weights", settings.imagenet_weights, settings_label, settings_label)

    preset = check_value(FIELDS["preset"], file_values.get("preset"), file_where("preset"))
    for key, value in parsed_overrides:
        if key == "preset":
            preset = check_value(FIELDS["preset"], value, "--set")
    if preset is not None:
        for key, value in PRESETS[preset].items():
            put(key, value, f"preset:{preset}", f"preset {preset}")
    for key, value in file_values.items():
        put(key, value, file_where(key), file_where(key))
    for key, value in parsed_overrides:
        put(key, value, "--set", "--set")

    for key in values:
        values[key] = check_value(FIELDS[key], values[key], wheres[key])

    # Paths: data and weights against the working directory, checkpoint inits against the config's folder.
    for key in ("data.root", "finetune.imagenet_weights"):
        if values.get(key) is not None:
            values[key] = _resolve_path(values[key], cwd)
    if "finetune.init" in values:
        base = cwd if sources["finetune.init"] == "--set" or base_dir is None else base_dir
        resolved = []
        for text in values["finetune.init"]:
            spec = parse_init(text)
            if spec.kind == "checkpoint":
                spec = InitSpec("checkpoint", _resolve_path(spec.ref, base), spec.epoch)
            resolved.append(str(spec))
        _no_repeats("finetune.init", resolved, wheres["finetune.init"])
        values["finetune.init"] = resolved

    cfg = _build(values, present)
    _cross_check(cfg, lambda key: wheres.get(key, source), check_paths)
    return cfg, sources


def _build(values: dict[str, Any], present: set[str]) -> ExperimentConfig:
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if name in OPTIONAL_SECTIONS and name not in present:
            sections[name] = None
            continue
        prefix = f"{name}."
        sections[name] = cls(**{key[len(prefix):]: value for key, value in values.items() if key.startswith(prefix)})
    top = {key: value for key, value in values.items() if "." not in key}
    return ExperimentConfig(**top, **sections)


def _cross_check(cfg: ExperimentConfig, where: Callable[[str], str | None], check_paths: bool) -> None:
    """Rules between keys: something to run, barlow_twins needs [pretrain], paths that must exist."""
    if cfg.pretrain is None and cfg.finetune is None:
        _fail(where("name"), "the config has neither a [pretrain] nor a [finetune] section, so there is nothing "
                             "to run; add at least one (an empty [finetune] header uses the defaults)")
    world = cfg.resources.devices * cfg.resources.nodes
    if cfg.pretrain is not None and world > 1 and cfg.pretrain.batch_size % world != 0:
        lower = cfg.pretrain.batch_size // world * world
        _fail(where("pretrain.batch_size"),
              f"pretrain.batch_size = {cfg.pretrain.batch_size} is not divisible by the number of training processes "
              f"({world} = resources.devices {cfg.resources.devices} x resources.nodes {cfg.resources.nodes}); every "
              f"GPU takes an equal share of the global batch, so use a multiple of {world}"
              + (f", e.g. {lower} or {lower + world}" if lower else f", e.g. {world}"))
    if cfg.finetune is not None:
        for text in cfg.finetune.init:
            spec = parse_init(text)
            if spec.kind != "barlow_twins":
                continue
            if cfg.pretrain is None:
                _fail(where("finetune.init"),
                      f"finetune.init includes {_quote(text)}, which fine-tunes this run's own pretrained backbone, "
                      "but the config has no [pretrain] section (the default init is [\"barlow_twins\", "
                      "\"imagenet\"]); add a [pretrain] section, or use init = [\"imagenet\", \"random\"] or "
                      "\"run:<id>\" to start from another run's backbone")
            if spec.epoch is not None and spec.epoch > cfg.pretrain.epochs:
                _fail(where("finetune.init"),
                      f"finetune.init {_quote(text)} asks for epoch {spec.epoch}, but pretrain.epochs is "
                      f"{cfg.pretrain.epochs}")
    if not check_paths:
        return
    root = cfg.data.root
    if not cfg.data.synthesize and not _path_exists(root):
        _fail(where("data.root"),
              f"data.root {root} does not exist. Point data.root (or data_root in the machine settings file) at a "
              f"MIMeta directory, generate demo data with `bttui data synth {root}`, or set `synthesize = true` "
              "in [data] to generate it at the start of the run")
    if cfg.finetune is not None:
        weights = cfg.finetune.imagenet_weights
        if weights is not None and not _path_exists(weights):
            _fail(where("finetune.imagenet_weights"),
                  f"finetune.imagenet_weights {weights} does not exist; give the path of a torchvision ResNet "
                  "state dict, or remove the key to download the weights")
        for text in cfg.finetune.init:
            spec = parse_init(text)
            if spec.kind == "checkpoint" and not _path_exists(spec.ref):
                _fail(where("finetune.init"), f"finetune.init {_quote(text)}: checkpoint file {spec.ref} does not "
                                              "exist (relative paths resolve against the config file's folder)")


def _default_settings(settings: MachineSettings | None) -> MachineSettings:
    if settings is not None:
        return settings
    from bttui.config.settings import load_settings  # settings.py imports this module

    return load_settings()


# ---------------------------------------------------------------- public API


def load_config_with_sources(path: str | os.PathLike, overrides: Sequence[str] = (), *,
                             settings: MachineSettings | None = None,
                             check_paths: bool = True) -> tuple[ExperimentConfig, dict[str, str]]:
    """Load a TOML experiment config; also return each dotted key's source (default, preset:<name>, <file>:<line>, --set, settings:<path>).

    ``check_paths=False`` skips the checks that files exist (for browsing a run copied to another machine).
    """
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    text = read_text_file(name, "config file")
    base_dir = Path(os.path.abspath(name)).parent
    return _loads(text, name, base_dir, overrides, settings, check_paths)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = (), *,
                settings: MachineSettings | None = None, check_paths: bool = True) -> ExperimentConfig:
    """Load a TOML experiment config: presets, settings and overrides applied, paths absolute, all checked."""
    return load_config_with_sources(path, overrides, settings=settings, check_paths=check_paths)[0]


def _loads(text: str, source: str, base_dir: Path | None, overrides: Sequence[str],
           settings: MachineSettings | None, check_paths: bool) -> tuple[ExperimentConfig, dict[str, str]]:
    if not isinstance(text, str):
        _fail(source, f"expected TOML text, got {_type_name(text)}")
    tree = parse_toml(text, source)
    return _assemble(tree, source=source, lines=key_lines(text), base_dir=base_dir, overrides=overrides,
                     settings=_default_settings(settings), check_paths=check_paths)


def loads_config_with_sources(text: str, source: str = "<string>", base_dir: str | os.PathLike | None = None,
                              overrides: Sequence[str] = (), *, settings: MachineSettings | None = None,
                              check_paths: bool = True) -> tuple[ExperimentConfig, dict[str, str]]:
    """loads_config, also returning each dotted key's source."""
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else None
    return _loads(text, source, base, overrides, settings, check_paths)


def loads_config(text: str, source: str = "<string>", base_dir: str | os.PathLike | None = None,
                 overrides: Sequence[str] = (), *, settings: MachineSettings | None = None,
                 check_paths: bool = True) -> ExperimentConfig:
    """Load a config from TOML text; `source` names it in messages, `base_dir` anchors checkpoint: paths (default CWD)."""
    return loads_config_with_sources(text, source, base_dir, overrides, settings=settings, check_paths=check_paths)[0]


def config_from_dict(d: Any, source: str = "<dict>", *, base_dir: str | os.PathLike | None = None,
                     overrides: Sequence[str] = (), settings: MachineSettings | None = None,
                     check_paths: bool = True) -> ExperimentConfig:
    """Build a config from a nested dict (e.g. config_to_dict output) with the same checks as a file."""
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else None
    cfg, _ = _assemble(d, source=source, lines=None, base_dir=base, overrides=overrides,
                       settings=_default_settings(settings), check_paths=check_paths)
    return cfg


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """The config as plain JSON-able data, in section order, without None values or absent sections."""
    out: dict[str, Any] = {}
    for fld in dataclasses.fields(cfg):
        value = getattr(cfg, fld.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value):
            out[fld.name] = {sub.name: _plain(getattr(value, sub.name)) for sub in dataclasses.fields(value)
                             if getattr(value, sub.name) is not None}
        else:
            out[fld.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    return [_plain(item) for item in value] if isinstance(value, (list, tuple)) else value


def validate(cfg: ExperimentConfig, *, source: str = "<config>", check_paths: bool = False) -> None:
    """Check a config built in code (e.g. by a form): every value's type and range, then the cross-field rules."""
    if not isinstance(cfg, ExperimentConfig):
        _fail(source, f"expected an ExperimentConfig, got {_type_name(cfg)}")
    for key, info in FIELDS.items():
        if info.section is None:
            check_value(info, getattr(cfg, key), source)
            continue
        section = getattr(cfg, info.section)
        if section is None and info.section in OPTIONAL_SECTIONS:
            continue
        if not isinstance(section, SECTIONS[info.section]):
            _fail(source, f"[{info.section}] must be a {SECTIONS[info.section].__name__}, got {_type_name(section)}")
        check_value(info, getattr(section, info.name), source)
    _cross_check(cfg, lambda key: source, check_paths)


# ---------------------------------------------------------------- TOML writing

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """A TOML basic string (control characters and DEL escaped, as TOML requires)."""
    out = ['"']
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_value(value: Any) -> str:
    """One value in TOML syntax (strings, booleans, numbers, lists and inline tables of them)."""
    return inline_value(value, _toml_scalar, lambda key: toml_string(str(key)))


def config_to_toml(cfg: ExperimentConfig) -> str:
    """The config as TOML with every key explicit; loading it back gives an equal config."""
    data = config_to_dict(cfg)
    lines = ["# bttui experiment config: every key explicit (defaults and preset filled in)"]
    for key, value in data.items():
        if key not in SECTIONS:
            lines.append(f"{key} = {toml_value(value)}")
    for section in SECTIONS:
        if section not in data:
            continue
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in data[section].items()]
    return "\n".join(lines) + "\n"
