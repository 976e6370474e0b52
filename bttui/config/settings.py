"""Per-machine settings (`$BTTUI_CONFIG` or ~/.config/bttui/config.toml): store, data and weights locations, run limits."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from bttui.config.load import (
    ConfigError,
    check_value,
    field_infos,
    key_lines,
    line_of,
    parse_toml,
    read_text_file,
    unknown_key_message,
)
from bttui.config.schema import f


@dataclass
class MachineSettings:
    """What one machine knows that experiment configs should not: where things live, how many runs fit."""

    store: str | None = f(None, "Run store directory (below --store and $BTTUI_STORE, above ./runs)")
    data_root: str | None = f(None, "MIMeta root used when an experiment config does not set data.root")
    imagenet_weights: str | None = f(None, "torchvision ResNet state dict used when a config does not set finetune.imagenet_weights")
    reservations_dir: str = f("/tmp/bttui-gpu-reservations", "Folder of GPU reservation files shared by bttui processes on this machine")
    max_runs_per_gpu: int = f(1, "Runs the queue starts on one GPU at the same time", minimum=1, maximum=1024)
    max_cpu_runs: int = f(1, "Runs the queue starts at the same time on a machine without GPUs", minimum=1, maximum=1024)
    on_finish: str | None = f(None, "Shell command run when any run ends, with BTTUI_RUN_ID and BTTUI_STATUS set")
    min_free_gb: float = f(1.0, "Free GiB a store needs before a launch (at least 3x a checkpoint); 0 turns the check off", minimum=0.0)
    local_db_dir: str | None = f(None, "Local folder for the index and queue databases of stores on network filesystems")
    path: str | None = field(default=None, compare=False, metadata={"doc": "The settings file these came from (None: defaults)"})


SETTINGS_FIELDS = {key: info for key, info in field_infos(MachineSettings, None).items() if key != "path"}
_PATH_KEYS = ("store", "data_root", "imagenet_weights", "reservations_dir", "local_db_dir")


def settings_path(path: str | os.PathLike | None = None) -> Path:
    """Where settings are read from: the argument, else $BTTUI_CONFIG, else ~/.config/bttui/config.toml."""
    if path is not None:
        return Path(path)
    env = os.environ.get("BTTUI_CONFIG")
    if env:
        return Path(env)
    return Path.home() / ".config" / "bttui" / "config.toml"


def load_settings(path: str | os.PathLike | None = None) -> MachineSettings:
    """Read the machine settings; a missing file gives the defaults, a broken one a ConfigError.

    Relative paths (and ~) in the file resolve against the settings file's folder.
    """
    location = settings_path(path)
    if not location.exists():
        return MachineSettings()
    name = str(location)
    text = read_text_file(location, "settings file")
    tree = parse_toml(text, name)
    lines = key_lines(text)
    values = {}
    for key, value in tree.items():
        number = line_of(lines, key)
        where = f"{name}:{number}" if number is not None else name
        if key not in SETTINGS_FIELDS:
            raise ConfigError(f"{where}: {unknown_key_message(key, list(SETTINGS_FIELDS), 'the settings file')}")
        values[key] = check_value(SETTINGS_FIELDS[key], value, where)
    base = location.resolve().parent
    for key in _PATH_KEYS:
        if values.get(key):
            values[key] = os.path.abspath(os.path.join(base, os.path.expanduser(values[key])))
    return dataclasses.replace(MachineSettings(**values), path=name)
