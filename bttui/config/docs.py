"""The config reference generated from the schema: field_docs(), markdown tables, and the README block updater.

`python -m bttui.config.docs --write README.md` rewrites the block between the markers;
`--check README.md` exits 1 when it is stale; no option prints the markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from bttui.config.load import EXTRA_LIMITS, FIELDS, FLOAT_CAP, INT_CAP, FieldInfo, toml_value
from bttui.config.presets import PRESET_DOCS, PRESETS
from bttui.config.schema import SECTIONS
from bttui.config.settings import SETTINGS_FIELDS

START_MARKER = "<!-- config-reference:start -->"
END_MARKER = "<!-- config-reference:end -->"

_TYPE_NAMES = {
    "str": "string",
    "str?": "string (optional)",
    "int": "integer",
    "float": "float",
    "bool": "bool",
    "list[str]": "list of strings",
    "list[int]": "list of integers",
    "list[float]": "list of floats",
    "gpus": '"auto" or list of integers',
}


def _default_repr(value: Any) -> str:
    return "unset" if value is None else toml_value(value)


def field_docs() -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default as TOML, one-line doc) for every experiment config key, in schema order."""
    return [(key, _TYPE_NAMES[info.kind], _default_repr(info.default), info.doc) for key, info in FIELDS.items()]


def _bounds(info: FieldInfo) -> str:
    """Valid values in words, e.g. "one of: adam, lars, sgd" or ">= 1, <= 1000000"."""
    if info.choices is not None:
        choices = [str(c) for c in info.choices if c is not None]
        if all(choice in info.doc for choice in choices):
            return ""  # the doc already names them
        return "one of: " + ", ".join(choices)
    if info.kind not in ("int", "float"):
        return ""
    low, high = EXTRA_LIMITS.get(info.key, (None, None))
    low = info.minimum if low is None else low
    high = info.maximum if high is None else high
    high = high if high is not None else (INT_CAP if info.kind == "int" else FLOAT_CAP)
    parts = []
    if low is not None:
        parts.append(f"{'>' if info.exclusive_min else '>='} {_number(low)}")
    parts.append(f"<= {_number(high)}")
    return ", ".join(parts)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(infos: Sequence[FieldInfo]) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for info in infos:
        description = info.doc
        bounds = _bounds(info)
        if bounds:
            description += f" ({bounds})"
        rows.append(f"| `{info.name}` | {_cell(_TYPE_NAMES[info.kind])} | `{_cell(_default_repr(info.default))}` "
                    f"| {_cell(description)} |")
    return rows


def config_reference_markdown() -> str:
    """Markdown: one table per section (key, type, default, description), then the presets."""
    lines = ["_Generated from `bttui/config/schema.py` by `python -m bttui.config.docs --write README.md`; "
             "do not edit by hand._", "", "#### Top-level keys", ""]
    lines += _table([info for info in FIELDS.values() if info.section is None])
    for section, cls in SECTIONS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines += ["", f"#### `[{section}]`", "", doc, ""] if doc else ["", f"#### `[{section}]`", ""]
        lines += _table([info for info in FIELDS.values() if info.section == section])
    lines += ["", "#### Presets", "",
              "`preset = \"<name>\"` sets these keys below the file's own keys (only in sections the file has).", "",
              "| preset | what | keys |", "|---|---|---|"]
    for name, values in PRESETS.items():
        keys = ", ".join(f"`{key} = {toml_value(value)}`" for key, value in values.items())
        lines.append(f"| `{name}` | {_cell(PRESET_DOCS.get(name, ''))} | {_cell(keys)} |")
    lines += ["", "#### Machine settings", "",
              "Top-level keys of `$BTTUI_CONFIG` (default `~/.config/bttui/config.toml`); relative paths "
              "resolve against that file's folder.", ""]
    lines += _table(list(SETTINGS_FIELDS.values()))
    return "\n".join(lines) + "\n"


def _split(readme_text: str) -> tuple[str, str, str] | None:
    start = readme_text.find(START_MARKER)
    end = readme_text.find(END_MARKER, start + len(START_MARKER)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return readme_text[:start + len(START_MARKER)], readme_text[start + len(START_MARKER):end], readme_text[end:]


def check_readme(readme_text: str) -> bool:
    """True when the text has both markers and the block between them is the current reference."""
    parts = _split(readme_text)
    return parts is not None and parts[1].strip() == config_reference_markdown().strip()


def update_readme(readme_text: str) -> str:
    """The text with the block between the markers replaced by the current reference; ValueError without markers."""
    parts = _split(readme_text)
    if parts is None:
        raise ValueError(f"no {START_MARKER} ... {END_MARKER} block found")
    head, _, tail = parts
    return f"{head}\n{config_reference_markdown()}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: --write FILE updates the block, --check FILE tests it, neither prints the markdown."""
    parser = argparse.ArgumentParser(prog="python -m bttui.config.docs", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", help="rewrite the config reference block in FILE")
    group.add_argument("--check", metavar="FILE", help="exit 1 if the block in FILE is stale or missing")
    args = parser.parse_args(argv)
    if args.write is None and args.check is None:
        sys.stdout.write(config_reference_markdown())
        return 0
    path = Path(args.write or args.check)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        print(f"error: cannot read {path}: {err.strerror or err}", file=sys.stderr)
        return 2
    if args.check is not None:
        if check_readme(text):
            return 0
        print(f"{path}: the config reference block is stale or missing; run "
              f"python -m bttui.config.docs --write {path}", file=sys.stderr)
        return 1
    try:
        updated = update_readme(text)
    except ValueError as err:
        print(f"error: {path}: {err}", file=sys.stderr)
        return 2
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
