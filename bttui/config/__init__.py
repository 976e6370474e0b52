"""Experiment configs: the typed schema, TOML loading with checked errors, presets, machine settings and the cell grid."""

from bttui.config.cells import CellSpec, expand_cells
from bttui.config.init_spec import (
    INIT_KINDS,
    PROBE_LAYERS,
    SURGICAL_LAYERS,
    InitSpec,
    StrategySpec,
    parse_init,
    parse_strategy,
)
from bttui.config.load import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
    load_config_with_sources,
    loads_config,
    loads_config_with_sources,
    validate,
)
from bttui.config.presets import PRESET_DOCS, PRESETS
from bttui.config.schema import (
    DataConfig,
    ExperimentConfig,
    FinetuneConfig,
    HealthConfig,
    PretrainConfig,
    ResourcesConfig,
)
from bttui.config.settings import MachineSettings, load_settings, settings_path

_DOCS_NAMES = ("check_readme", "config_reference_markdown", "field_docs")


def __getattr__(name: str):
    # Lazy so that `python -m bttui.config.docs` does not find its own module already imported.
    if name in _DOCS_NAMES:
        from bttui.config import docs

        return getattr(docs, name)
    raise AttributeError(f"module 'bttui.config' has no attribute {name!r}")


__all__ = [
    "INIT_KINDS",
    "PRESETS",
    "PRESET_DOCS",
    "PROBE_LAYERS",
    "SURGICAL_LAYERS",
    "CellSpec",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "FinetuneConfig",
    "HealthConfig",
    "InitSpec",
    "MachineSettings",
    "PretrainConfig",
    "ResourcesConfig",
    "StrategySpec",
    "check_readme",
    "config_from_dict",
    "config_reference_markdown",
    "config_to_dict",
    "config_to_toml",
    "expand_cells",
    "field_docs",
    "load_config",
    "load_config_with_sources",
    "load_settings",
    "loads_config",
    "loads_config_with_sources",
    "parse_init",
    "parse_strategy",
    "settings_path",
    "validate",
]
