"""Tests for bttui.config: loading, every error message, presets and sources, overrides, settings, round trip, docs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from bttui.config import (
    PRESETS,
    ConfigError,
    ExperimentConfig,
    FinetuneConfig,
    MachineSettings,
    PretrainConfig,
    check_readme,
    config_from_dict,
    config_reference_markdown,
    config_to_dict,
    config_to_toml,
    field_docs,
    load_config,
    load_config_with_sources,
    load_settings,
    loads_config,
    validate,
)
from bttui.config.docs import END_MARKER, START_MARKER, main as docs_main
from bttui.config.load import FIELDS, key_lines, toml_string
from bttui.errors import BttuiError

BOTH = "[pretrain]\nepochs = 2\n\n[finetune]\n"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test runs in a temp CWD with ./data/mimeta present and no machine settings file."""
    monkeypatch.setenv("BTTUI_CONFIG", str(tmp_path / "no-settings.toml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "mimeta").mkdir(parents=True)


def write(tmp_path: Path, text: str, name: str = "experiments/exp.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(text: str, overrides=(), **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        loads_config(text, "exp.toml", overrides=overrides, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "a ConfigError is one paragraph"
    return message


# ---------------------------------------------------------------- loading basics


def test_sections_absent_are_none_and_defaults_fill_the_rest(tmp_path):
    cfg = loads_config("[finetune]\ninit = [\"imagenet\"]\n")
    assert cfg.pretrain is None
    assert cfg.finetune == FinetuneConfig(init=["imagenet"], label_fractions=[0.1, 0.25, 0.5, 1.0])
    assert cfg.data.image_size == 224
    assert cfg.data.root == str(tmp_path / "data" / "mimeta")
    cfg = loads_config("[pretrain]\n")
    assert cfg.finetune is None
    assert cfg.pretrain == PretrainConfig()


def test_empty_pretrain_header_means_defaults_and_int_accepted_for_float():
    cfg = loads_config(BOTH + "lr = 1\n")
    assert cfg.finetune.lr == 1.0 and isinstance(cfg.finetune.lr, float)
    assert isinstance(cfg.pretrain.warmup_epochs, float)
    assert cfg.pretrain.epochs == 2


def test_load_config_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "elsewhere" / "mimeta").mkdir(parents=True)
    (tmp_path / "experiments" / "ckpts").mkdir(parents=True)
    (tmp_path / "experiments" / "ckpts" / "a.pt").write_bytes(b"x")
    (tmp_path / "w.pth").write_bytes(b"x")
    path = write(tmp_path, '[data]\nroot = "elsewhere/mimeta"\n[finetune]\n'
                           'init = ["checkpoint:ckpts/a.pt@epoch=3", "imagenet"]\nimagenet_weights = "w.pth"\n')
    cfg = load_config(path)
    assert cfg.data.root == str(tmp_path / "elsewhere" / "mimeta")  # against the CWD
    assert cfg.finetune.init == [f"checkpoint:{tmp_path / 'experiments' / 'ckpts' / 'a.pt'}@epoch=3", "imagenet"]
    assert cfg.finetune.imagenet_weights == str(tmp_path / "w.pth")
    # Loading from another CWD with absolute paths changes nothing.
    out = tmp_path / "run" / "config.toml"
    out.parent.mkdir()
    out.write_text(config_to_toml(cfg))
    monkeypatch.chdir(out.parent)
    assert load_config(out) == cfg


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = loads_config('[data]\nroot = "~/data/mimeta"\n' + BOTH)
    assert cfg.data.root == str(tmp_path / "data" / "mimeta")


# ---------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("name = \"x\"\n\n[pretrain]\nlamda = 0.1\n",
         ["exp.toml:4:", 'unknown key "pretrain.lamda"', 'did you mean "pretrain.lambd"?',
          "Valid keys in [pretrain]:", "lambd, batch_size"]),
        ("nmae = \"x\"\n" + BOTH, ["exp.toml:1:", 'unknown key "nmae"', 'did you mean "name"?', "Valid top-level keys:",
                                   "[pretrain]"]),
        ("[pretrian]\nepochs = 3\n", ["exp.toml:1:", 'unknown key "pretrian"', 'did you mean "pretrain"?']),
        (BOTH + "lambd = 0.1\n", ["exp.toml:5:", '"finetune.lambd"', 'did you mean "pretrain.lambd"?',
                                  "Valid keys in [finetune]:"]),
        ("pretrain.epochs = 3\npretrain.lamda = 2\n", ["exp.toml:2:", 'unknown key "pretrain.lamda"']),
        ("pretrain = { epochs = 3, lamda = 2 }\n", ["exp.toml:1:", 'unknown key "pretrain.lamda"']),
        ("[pretrain.extra]\nx = 1\n", ["exp.toml:1:", 'unknown key "pretrain.extra"']),
        ("data = 3\n", ["exp.toml:1:", '"data" is a section', "[data]"]),
        ("[pretrain]\nepochs = \n", ["exp.toml:", "not valid TOML", "line 2"]),
        ("[pretrain]\nepochs = 3\n[pretrain]\n", ["exp.toml:", "not valid TOML", "line 3"]),
        ("[pretrain]\nepochs = \"ten\"\n", ["exp.toml:2:", "pretrain.epochs must be a whole number", '"ten"', "a string"]),
        ("[pretrain]\nepochs = true\n", ["pretrain.epochs must be a whole number", "a boolean"]),
        ("[pretrain]\nepochs = 3.0\n", ["pretrain.epochs must be a whole number", "3.0"]),
        ("[pretrain]\nchannels_last = 1\n", ["pretrain.channels_last must be true or false"]),
        ("name = 3\n" + BOTH, ["exp.toml:1:", "name must be a string", "an integer"]),
        ("[pretrain]\n[finetune]\nlabel_fractions = [0.1, \"x\"]\n",
         ["exp.toml:3:", "finetune.label_fractions[1] must be a number", '"x"']),
        ("[pretrain]\n[finetune]\nlabel_fractions = 0.1\n", ["finetune.label_fractions must be a list of numbers"]),
        (BOTH + "[resources]\ngpus = \"all\"\n", ["resources.gpus must be \"auto\" or a list of GPU indices", '"all"']),
        (BOTH + "[resources]\ngpus = [-1]\n", ["resources.gpus[0] must be >= 0"]),
        (BOTH + "[resources]\ngpus = [0, true]\n", ["resources.gpus[1] must be a whole number", "a boolean"]),
        (BOTH + "[resources]\ngpus = []\n", ["resources.gpus must be"]),
        (BOTH + "[resources]\ngpus = [1, 1]\n", ["resources.gpus lists 1 twice"]),
        ("[pretrain]\noptimizer = \"adamw\"\n",
         ["exp.toml:2:", "pretrain.optimizer must be one of \"adam\", \"lars\", \"sgd\"", 'did you mean "adam"?']),
        ("preset = \"papr\"\n" + BOTH, ["exp.toml:1:", "preset must be one of", '"paper"', '"authors-code"']),
        ("[pretrain]\nlr = 0\n", ["pretrain.lr must be > 0"]),
        ("[pretrain]\nmomentum = 1.5\n", ["pretrain.momentum must be <= 1"]),
        ("[data]\nimage_size = 4\n" + BOTH, ["exp.toml:2:", "data.image_size must be >= 8"]),
        ("[pretrain]\nbatch_size = 1\n", ["pretrain.batch_size must be >= 2"]),
        ("[pretrain]\n[finetune]\nbatch_size = 1\n", ["finetune.batch_size must be >= 2"]),
        ("[pretrain]\n[finetune]\nlabel_fractions = [0.1, 0]\n", ["finetune.label_fractions[1] must be in (0, 1]"]),
        ("[pretrain]\n[finetune]\nlabel_fractions = [1.5]\n", ["finetune.label_fractions[0] must be in (0, 1]", "1.5"]),
        ("[pretrain]\nprojector = []\n", ["pretrain.projector must list at least one layer width"]),
        ("[pretrain]\nprojector = [2048, 0]\n", ["pretrain.projector[1] must be >= 1"]),
        ("[pretrain]\nprojector = [2048, 2.5]\n", ["pretrain.projector[1] must be a whole number"]),
        ("[pretrain]\nprojector = [1000000]\n", ["pretrain.projector[0] must be <= 65536"]),
        ("[pretrain]\nsplits = [\"train\", \"test\"]\n",
         ["exp.toml:2:", 'pretrain.splits must not include "test"', "held out", '["train", "val"]']),
        ("[pretrain]\nsplits = [\"training\"]\n", ['unknown split "training"', '"train", "val"']),
        ("[pretrain]\nsplits = []\n", ["pretrain.splits must list at least one split"]),
        ("[pretrain]\ndatasets = [\"../etc\"]\n", ['"../etc" is not a dataset id']),
        ("[pretrain]\n[finetune]\ndatasets = []\n", ["finetune.datasets must list at least one"]),
        ("[pretrain]\n[finetune]\ninit = []\n", ["finetune.init must list at least one init", "random | imagenet"]),
        ("[pretrain]\n[finetune]\nstrategy = []\n", ["finetune.strategy must list at least one"]),
        ("[pretrain]\n[finetune]\nlabel_fractions = []\n", ["finetune.label_fractions must list at least one"]),
        ("[pretrain]\n[finetune]\nseeds = []\n", ["finetune.seeds must list at least one seed"]),
        ("[pretrain]\n[finetune]\ninit = [\"foo\"]\n",
         ['unknown init \'foo\'', "random | imagenet | barlow_twins | run:", "checkpoint:<path>"]),
        ("[pretrain]\n[finetune]\ninit = [\"imagenet@epoch=3\"]\n", ["@epoch= applies only to barlow_twins"]),
        ("[pretrain]\n[finetune]\ninit = [\"barlow_twins@epoch=0\"]\n", ["@epoch= needs a whole number from 1"]),
        ("[pretrain]\n[finetune]\ninit = [\"barlow_twins@epoch=x\"]\n", ["@epoch= needs a whole number"]),
        ("[pretrain]\n[finetune]\ninit = [\"run:\"]\n", ["run: needs a run id"]),
        ("[pretrain]\nepochs = 5\n[finetune]\ninit = [\"barlow_twins@epoch=10\"]\n",
         ["asks for epoch 10", "pretrain.epochs is 5"]),
        ("[finetune]\ninit = [\"imagenet\", \"barlow_twins\"]\n",
         ["exp.toml:2:", 'finetune.init includes "barlow_twins"', "no [pretrain] section"]),
        ("[finetune]\n", ["exp.toml:1:", "no [pretrain] section", 'default init is ["barlow_twins", "imagenet"]']),
        ("[pretrain]\n[finetune]\nstrategy = [\"surgical:layer4,layer5\"]\n",
         ["unknown layer 'layer5'", "conv1, bn1, layer1, layer2, layer3, layer4"]),
        ("[pretrain]\n[finetune]\nstrategy = [\"partial\"]\n", ["unknown strategy 'partial'", "linear | full | surgical:"]),
        ("[pretrain]\n[finetune]\nprobe_layers = [\"layer5\"]\n",
         ['finetune.probe_layers: unknown value "layer5"', "layer1, layer2, layer3, layer4"]),
        ("[pretrain]\n[finetune]\nembeddings = [\"pca\"]\n", ['unknown value "pca"', "tsne, umap"]),
        ("[pretrain]\n[finetune]\ntask = \"\"\n", ["finetune.task must not be empty"]),
        ("name = \"\"\n[pretrain]\n", ["name must not be empty"]),
        ("[pretrain]\nepochs = 1000000000000000000000000000000\n", ["pretrain.epochs must be <= 1000000"]),
        ("[pretrain]\nbatch_size = 1000000000000000000000000000000\n", ["pretrain.batch_size must be <= 1000000"]),
        ("[pretrain]\nlr = 1e400\n", ["pretrain.lr must be a finite number", "inf"]),
        ("[pretrain]\nlambd = nan\n", ["pretrain.lambd must be a finite number", "nan"]),
        ("[pretrain]\nlr = 1e300\n", ["pretrain.lr must be <= 1e+09"]),
        ("[pretrain]\nlr = " + "1" * 400 + "\n", ["pretrain.lr must be <="]),
        ("seed = -1\n[pretrain]\n", ["seed must be >= 0"]),
        ("seed = 5000000000\n[pretrain]\n", ["seed must be <= 4294967295"]),
        ("[pretrain]\n[finetune]\nseeds = [0, 1, 0]\n", ["finetune.seeds lists 0 twice"]),
        ("[pretrain]\n[finetune]\ninit = [\"imagenet\", \" imagenet\"]\n", ['finetune.init lists "imagenet" twice']),
        ("[pretrain]\n[finetune]\nlabel_fractions = [0.1, 0.1]\n", ["finetune.label_fractions lists 0.1 twice"]),
        ("[pretrain]\n[finetune]\nstrategy = [\"surgical:layer4,layer3\", \"surgical:layer3,layer4\"]\n",
         ['"surgical:layer3,layer4" twice']),
        ("[pretrain]\n[finetune]\ndatasets = [\"crc\", \"crc\"]\n", ['finetune.datasets lists "crc" twice']),
        ("[pretrain]\n[finetune]\nembeddings = [\"tsne\", \"tsne\"]\n", ["twice"]),
        ("[data]\nimage_size = 32\n", ["neither a [pretrain] nor a [finetune] section", "nothing to run"]),
        ("", ["nothing to run"]),
        ("a = " + "9" * 5000 + "\n", ["exp.toml:", "cannot be read as TOML"]),
        ("a = " + "[" * 3000 + "]" * 3000 + "\n", ["exp.toml:", "nested too deeply"]),
    ],
)
def test_config_errors(text, fragments):
    message = error_of(text)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_config_error_is_a_bttui_error():
    with pytest.raises(BttuiError) as info:
        loads_config("[pretrain]\nepochs = 0\n")
    assert info.value.exit_code == 2
    assert "pretrain.epochs must be >= 1" in str(info.value)


def test_missing_data_root_names_path_and_fixes(tmp_path):
    message = error_of('[data]\nroot = "nowhere"\n' + BOTH)
    assert message.startswith("exp.toml:2:")
    assert str(tmp_path / "nowhere") in message
    assert f"bttui data synth {tmp_path / 'nowhere'}" in message
    assert "synthesize = true" in message
    cfg = loads_config('[data]\nroot = "nowhere"\nsynthesize = true\n' + BOTH)
    assert cfg.data.root == str(tmp_path / "nowhere") and cfg.data.synthesize
    assert loads_config('[data]\nroot = "nowhere"\n' + BOTH, check_paths=False).data.root == str(tmp_path / "nowhere")


def test_missing_checkpoint_and_weights_files(tmp_path):
    message = error_of('[finetune]\ninit = ["checkpoint:missing.pt"]\n', base_dir=tmp_path / "exp")
    assert str(tmp_path / "exp" / "missing.pt") in message and "does not exist" in message
    message = error_of('[finetune]\ninit = ["imagenet"]\nimagenet_weights = "w.pth"\n')
    assert "finetune.imagenet_weights" in message and str(tmp_path / "w.pth") in message


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*missing\.toml does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not UTF-8"):
        load_config(bad)
    path = write(tmp_path, "[pretrain]\nepochs = 3\nlamda = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:3: unknown key \"pretrain.lamda\"")


def test_key_lines_scanner():
    text = ('name = "x"\n# comment\n[pretrain]\nepochs = 3\n"lambd" = 1\ndescription = """\nfoo = 1\n"""\n'
            "[finetune]\ninit.x = 1\n")
    lines = key_lines(text)
    assert lines["name"] == 1
    assert lines["pretrain"] == 3 and lines["pretrain.epochs"] == 4 and lines["pretrain.lambd"] == 5
    assert "pretrain.foo" not in lines  # inside a multi-line string
    assert lines["finetune"] == 9 and lines["finetune.init.x"] == 10 and lines["finetune.init"] == 10


def test_config_from_dict_same_checks():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"pretrain": {"epochs": "3"}}, source="run.json")
    assert str(info.value).startswith("run.json: pretrain.epochs must be a whole number")
    with pytest.raises(ConfigError, match='unknown key "pretrain.lamda"'):
        config_from_dict({"pretrain": {"lamda": 1}})
    with pytest.raises(ConfigError, match="a config must be a table"):
        config_from_dict([1, 2])


def test_validate_checks_configs_built_in_code():
    cfg = ExperimentConfig()
    validate(cfg)
    with pytest.raises(ConfigError, match="pretrain.epochs must be >= 1"):
        validate(dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, epochs=0)))
    with pytest.raises(ConfigError, match="no \\[pretrain\\] section"):
        validate(dataclasses.replace(cfg, pretrain=None))
    with pytest.raises(ConfigError, match='must not include "test"'):
        validate(dataclasses.replace(cfg, pretrain=PretrainConfig(splits=["test"])))
    with pytest.raises(ConfigError, match="data.root must be a string"):
        validate(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=None)))


# ---------------------------------------------------------------- presets and sources


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_apply_below_file_keys(tmp_path, name):
    path = write(tmp_path, f'preset = "{name}"\n\n[pretrain]\nepochs = 7\n\n[finetune]\n')
    cfg, sources = load_config_with_sources(path)
    for key, value in PRESETS[name].items():
        if key == "pretrain.epochs":
            continue  # the file sets it
        section, _, field = key.partition(".")
        assert getattr(getattr(cfg, section), field) == value, key
        assert sources[key] == f"preset:{name}"
    assert cfg.pretrain.epochs == 7 and sources["pretrain.epochs"] == f"{path}:4"
    assert sources["preset"] == f"{path}:1"
    assert sources["finetune.epochs"] == "default"
    # --set beats the file and the preset.
    cfg, sources = load_config_with_sources(path, ["pretrain.epochs=9", "pretrain.lambd=0.01"])
    assert cfg.pretrain.epochs == 9 and cfg.pretrain.lambd == 0.01
    assert sources["pretrain.epochs"] == sources["pretrain.lambd"] == "--set"


def test_preset_values_are_exactly_the_documented_recipes():
    assert PRESETS["paper"]["pretrain.lr"] == 0.03 and PRESETS["paper"]["pretrain.epochs"] == 1000
    assert PRESETS["authors-code"]["pretrain.lambd"] == 0.005
    assert PRESETS["authors-code"]["data.grayscale"] is True
    assert PRESETS["authors-code"]["pretrain.schedule"] == "constant"
    assert PRESETS["reference"]["pretrain.optimizer"] == "lars"
    assert PRESETS["reference"]["pretrain.projector"] == [8192, 8192, 8192]
    assert PRESETS["reference"]["pretrain.batch_size"] == 2048
    for values in PRESETS.values():
        assert set(values) <= set(FIELDS)


def test_preset_never_creates_a_missing_section():
    cfg, sources = _with_sources('preset = "authors-code"\n[finetune]\ninit = ["imagenet"]\n')
    assert cfg.pretrain is None
    assert cfg.data.grayscale is True and sources["data.grayscale"] == "preset:authors-code"
    assert not any(key.startswith("pretrain.") for key in sources)


def test_file_key_beats_preset_in_data_section():
    cfg = loads_config('preset = "authors-code"\n[data]\ngrayscale = false\n' + BOTH)
    assert cfg.data.grayscale is False and cfg.data.split_policy == "random"


def _with_sources(text, overrides=(), **kwargs):
    from bttui.config import loads_config_with_sources

    return loads_config_with_sources(text, "exp.toml", overrides=overrides, **kwargs)


# ---------------------------------------------------------------- overrides


def test_overrides_parse_toml_values_and_bare_words(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"x")
    cfg, sources = _with_sources(BOTH, [
        "pretrain.epochs=5", "finetune.label_fractions=[0.1, 0.5]", "name=my run", 'description="quoted # x"',
        "finetune.seeds=3", "resources.gpus=[0,1]", "pretrain.compile=true", "finetune.init=checkpoint:c.pt",
        "finetune.strategy=surgical:layer4, layer3", "data.split_policy = original",
    ], base_dir=tmp_path / "elsewhere")
    assert cfg.pretrain.epochs == 5
    assert cfg.finetune.label_fractions == [0.1, 0.5]
    assert cfg.name == "my run" and cfg.description == "quoted # x"
    assert cfg.finetune.seeds == [3]
    assert cfg.resources.gpus == [0, 1]
    assert cfg.pretrain.compile is True
    assert cfg.finetune.init == [f"checkpoint:{tmp_path / 'c.pt'}"]  # --set paths resolve against the CWD
    assert cfg.finetune.strategy == ["surgical:layer3,layer4"]
    assert cfg.data.split_policy == "original"
    assert sources["finetune.seeds"] == "--set"
    assert loads_config(BOTH + "[resources]\ngpus = [0]\n", overrides=["resources.gpus=auto"]).resources.gpus == "auto"


def test_override_creates_missing_section_from_defaults():
    cfg, sources = _with_sources('[finetune]\ninit = ["imagenet"]\n', ["pretrain.epochs=3", "preset=reference"])
    assert cfg.pretrain == dataclasses.replace(
        PretrainConfig(**{k.split(".")[1]: v for k, v in PRESETS["reference"].items()}), epochs=3)
    assert sources["pretrain.optimizer"] == "preset:reference" and sources["preset"] == "--set"
    assert sources["pretrain.datasets"] == "default"


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("pretrain.lamda=0.1", ["--set:", 'unknown key "pretrain.lamda"', 'did you mean "pretrain.lambd"?',
                                "Valid keys in [pretrain]"]),
        ("epochs=3", ["--set:", 'unknown key "epochs"', 'did you mean "pretrain.epochs"?']),
        ("pretrain.epochs", ["--set:", "expects KEY=VALUE", '"pretrain.epochs"']),
        ("pretrain=3", ["--set:", '"pretrain" is a section', "pretrain.datasets=..."]),
        ("pretrain.epochs=ten", ["--set:", "pretrain.epochs must be a whole number", '"ten"']),
        ("pretrain.epochs=", ["--set:", "pretrain.epochs must be a whole number"]),
        ("finetune.label_fractions=[0.1, 2]", ["--set:", "finetune.label_fractions[1] must be in (0, 1]"]),
        ("preset=fast", ["--set:", "preset must be one of"]),
    ],
)
def test_override_errors(override, fragments):
    message = error_of(BOTH, [override])
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ---------------------------------------------------------------- settings


def test_settings_defaults_when_missing(tmp_path):
    assert load_settings() == MachineSettings()
    assert load_settings(tmp_path / "nope.toml").reservations_dir == "/tmp/bttui-gpu-reservations"
    assert MachineSettings().max_runs_per_gpu == 1 and MachineSettings().store is None


def test_settings_file_is_read_and_paths_resolved(tmp_path, monkeypatch):
    path = write(tmp_path, 'store = "runs"\ndata_root = "/abs/mimeta"\nmax_runs_per_gpu = 2\n'
                           'on_finish = "notify-send done"\n', "conf/bttui.toml")
    monkeypatch.setenv("BTTUI_CONFIG", str(path))
    s = load_settings()
    assert s.store == str(tmp_path / "conf" / "runs")
    assert s.data_root == "/abs/mimeta" and s.max_runs_per_gpu == 2 and s.max_cpu_runs == 1
    assert s.on_finish == "notify-send done" and s.path == str(path)
    assert load_settings(path) == s


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('stor = "x"\n', [":1:", 'unknown key "stor"', 'did you mean "store"?', "Valid keys in the settings file",
                          "max_runs_per_gpu"]),
        ('store = "x"\nmax_runs_per_gpu = "2"\n', [":2:", "max_runs_per_gpu must be a whole number", '"2"']),
        ("max_cpu_runs = 0\n", [":1:", "max_cpu_runs must be >= 1"]),
        ("store = [\n", ["not valid TOML"]),
    ],
)
def test_settings_errors(tmp_path, text, fragments):
    path = write(tmp_path, text, "settings.toml")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(str(path))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_settings_supply_data_root_and_weights_unless_the_file_sets_them(tmp_path):
    (tmp_path / "shared" / "mimeta").mkdir(parents=True)
    (tmp_path / "w.pth").write_bytes(b"x")
    path = write(tmp_path, f'data_root = "{tmp_path / "shared" / "mimeta"}"\nimagenet_weights = "../w.pth"\n',
                 "conf/settings.toml")
    machine = load_settings(path)
    cfg, sources = _with_sources('[finetune]\ninit = ["imagenet"]\n', settings=machine)
    assert cfg.data.root == str(tmp_path / "shared" / "mimeta")
    assert cfg.finetune.imagenet_weights == str(tmp_path / "w.pth")
    assert sources["data.root"] == f"settings:{path}"
    cfg = loads_config('[data]\nroot = "data/mimeta"\n[finetune]\ninit = ["imagenet"]\n', settings=machine)
    assert cfg.data.root == str(tmp_path / "data" / "mimeta")
    # Weights from settings never create a [finetune] section.
    assert loads_config("[pretrain]\n", settings=machine).finetune is None


def test_settings_default_argument_reads_bttui_config(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    path = write(tmp_path, 'data_root = "m"\n', "s.toml")
    monkeypatch.setenv("BTTUI_CONFIG", str(path))
    assert loads_config(BOTH).data.root == str(tmp_path / "m")
    path.write_text("data_rot = 1\n")
    with pytest.raises(ConfigError, match='did you mean "data_root"'):
        loads_config(BOTH)


# ---------------------------------------------------------------- round trip


def _full_config_text(tmp_path: Path) -> str:
    (tmp_path / "experiments" / "best.pt").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "experiments" / "best.pt").write_bytes(b"x")
    (tmp_path / "w.pth").write_bytes(b"x")
    return (
        'name = "full \\"test\\""\nseed = 3\npreset = "reference"\n'
        'description = "line1\\nline2\\ttab \\u007f é ☃ \\\\ back"\non_finish = "echo $BTTUI_STATUS"\n'
        '[data]\nimage_size = 32\nsplit_policy = "original"\n'
        '[pretrain]\nepochs = 3\nsplits = ["train", "val"]\nwarmup_epochs = 1\nlambd = 1e-9\n'
        '[finetune]\ndatasets = ["organs_sagittal", "crc"]\ntask = "organ label"\n'
        'init = ["barlow_twins@epoch=2", "random", "run:2024", "checkpoint:best.pt", "imagenet"]\n'
        'strategy = ["linear", "surgical:layer4,conv1"]\nlabel_fractions = [0.005, 1]\nseeds = [0, 4294967295]\n'
        'imagenet_weights = "w.pth"\nprobe_layers = ["layer2"]\nembeddings = []\n'
        '[resources]\ngpus = [1, 0]\n[health]\non_collapse = "stop"\n'
    )


def test_round_trip_through_toml_and_dict(tmp_path, monkeypatch):
    path = write(tmp_path, _full_config_text(tmp_path))
    cfg = load_config(path)
    assert cfg.description == "line1\nline2\ttab \x7f é ☃ \\ back"
    assert cfg.finetune.label_fractions == [0.005, 1.0]
    text = config_to_toml(cfg)
    assert [line for line in text.splitlines() if line.startswith("[")] == [
        "[data]", "[pretrain]", "[finetune]", "[resources]", "[health]"]
    assert config_from_dict(config_to_dict(cfg)) == cfg
    # JSON-able, None values and None sections dropped.
    data = json.loads(json.dumps(config_to_dict(cfg)))
    assert data["finetune"]["seeds"] == [0, 4294967295]
    minimal = loads_config('[finetune]\ninit = ["imagenet"]\n')
    assert "pretrain" not in config_to_dict(minimal) and "task" not in config_to_dict(minimal)["finetune"]
    assert "preset" not in config_to_dict(minimal)
    assert loads_config(config_to_toml(minimal)) == minimal
    # From another folder: absolute paths make the written file self-contained.
    out = tmp_path / "runs" / "r1" / "config.toml"
    out.parent.mkdir(parents=True)
    out.write_text(text, encoding="utf-8")
    monkeypatch.chdir(out.parent)
    assert load_config(out) == cfg


def test_toml_string_escapes_every_control_character():
    import tomllib

    text = "".join(chr(i) for i in range(0, 0x80)) + "é☃\U0001f600"
    assert tomllib.loads(f"v = {toml_string(text)}")["v"] == text


# ---------------------------------------------------------------- docs


def test_field_docs_cover_every_key():
    docs = field_docs()
    keys = [row[0] for row in docs]
    assert keys == list(FIELDS)
    assert ("pretrain.lambd", "float", "0.0051", FIELDS["pretrain.lambd"].doc) in docs
    assert all(doc for _, _, _, doc in docs)
    row = dict((r[0], r) for r in docs)
    assert row["finetune.task"][2] == "unset" and row["data.root"][2] == '"data/mimeta"'


def test_reference_markdown_has_a_table_per_section():
    md = config_reference_markdown()
    for heading in ("#### Top-level keys", "#### `[data]`", "#### `[pretrain]`", "#### `[finetune]`",
                    "#### `[resources]`", "#### `[health]`", "#### Presets", "#### Machine settings"):
        assert heading in md
    assert "| `lambd` | float | `0.0051` |" in md
    assert "one of: adam, lars, sgd" in md
    assert "| `authors-code` |" in md


def test_readme_block_write_and_check(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{START_MARKER}\nold table\n{END_MARKER}\n\nafter\n")
    assert not check_readme(readme.read_text())
    assert docs_main(["--check", str(readme)]) == 1
    assert docs_main(["--write", str(readme)]) == 0
    text = readme.read_text()
    assert check_readme(text)
    assert text.startswith("# Title\n\nbefore\n\n" + START_MARKER) and text.endswith(END_MARKER + "\n\nafter\n")
    assert "old table" not in text and "| `lambd` |" in text
    assert docs_main(["--check", str(readme)]) == 0
    assert not check_readme("no markers here")
    (tmp_path / "plain.md").write_text("nothing\n")
    assert docs_main(["--write", str(tmp_path / "plain.md")]) == 2
    # The module entry point works as documented.
    readme.write_text(f"{START_MARKER}\n{END_MARKER}\n")
    result = subprocess.run([sys.executable, "-m", "bttui.config.docs", "--write", str(readme)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert check_readme(readme.read_text())


def test_config_package_stays_light():
    code = "import sys, bttui.config; print(sorted(m for m in ('torch', 'textual', 'numpy', 'typer') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# ---------------------------------------------------------------- fuzzing


def _dump(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(str(k))} = {_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    return toml_string(value)


def _dump_doc(tree: dict) -> str:
    return "".join(f"{toml_string(str(k))} = {_dump(v)}\n" for k, v in tree.items())


_scalars = st.one_of(
    st.booleans(), st.integers(), st.integers(min_value=-(10**40), max_value=10**40), st.floats(),
    st.text(max_size=20), st.sampled_from(["auto", "imagenet", "barlow_twins", "linear", "train", "test", "adam",
                                           "surgical:layer4", "run:x@epoch=2", "tsne", "0", ""]),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                       max_leaves=8)
_keys = st.sampled_from(list(FIELDS))


@st.composite
def _trees(draw):
    """Mostly-valid config dicts: real keys (sometimes misspelt) with random values."""
    tree: dict = {}
    for key in draw(st.lists(_keys, max_size=6)):
        section, _, name = key.rpartition(".")
        if draw(st.integers(0, 9)) == 0:
            name = name + draw(st.text(min_size=1, max_size=2))
        value = draw(_values)
        if section:
            tree.setdefault(section, {})[name] = value
        else:
            tree[name] = value
    for section in draw(st.lists(st.sampled_from(["pretrain", "finetune", "data"]), max_size=2)):
        tree.setdefault(section, {})
    return tree


_WORDS = ["auto", "imagenet", "random", "barlow_twins", "barlow_twins@epoch=1", "run:abc", "linear", "full",
          "surgical:layer4", "train", "val", "test", "adam", "lars", "resnet18", "tsne", "umap", "layer2",
          "organs_sagittal", "crc", "cosine", "warn", "stop", "cpu", "paper", "reference", "random", ""]


def _plausible(kind: str):
    """Values of roughly the right kind, so that many fuzzed configs load and exercise the round trip."""
    return {
        "int": st.integers(-2, 3000),
        "float": st.one_of(st.floats(-0.5, 2.0), st.integers(-1, 20)),
        "bool": st.booleans(),
        "str": st.sampled_from(_WORDS),
        "str?": st.sampled_from(_WORDS),
        "list[str]": st.lists(st.sampled_from(_WORDS), max_size=3),
        "list[int]": st.lists(st.integers(-1, 5000), max_size=3),
        "list[float]": st.lists(st.one_of(st.floats(0.0, 1.2), st.integers(0, 2)), max_size=3),
        "gpus": st.one_of(st.just("auto"), st.lists(st.integers(-1, 3), max_size=3)),
    }[kind]


@st.composite
def _mutated(draw):
    """A valid config with one to three keys replaced by plausible or random values."""
    tree: dict = {"pretrain": {"epochs": 2}, "finetune": {}}
    for key in draw(st.lists(_keys, min_size=1, max_size=3)):
        value = draw(st.one_of(_plausible(FIELDS[key].kind), _plausible(FIELDS[key].kind), _values))
        section, _, name = key.rpartition(".")
        (tree.setdefault(section, {}) if section else tree)[name] = value
    if draw(st.booleans()):
        del tree[draw(st.sampled_from(["pretrain", "finetune"]))]
    return tree


_outcomes: dict[str, int] = {"ok": 0, "error": 0}


def _load_or_error(load) -> ExperimentConfig | None:
    try:
        cfg = load()
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)
        _outcomes["error"] += 1
        return None
    _outcomes["ok"] += 1
    assert isinstance(cfg, ExperimentConfig)
    # Whatever loads must validate and round-trip.
    validate(cfg)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert loads_config(config_to_toml(cfg)) == cfg
    return cfg


_fuzz = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_fuzz
@given(st.text(max_size=200))
def test_fuzz_random_text(text):
    _load_or_error(lambda: loads_config(text, "fuzz.toml"))


@_fuzz
@given(_trees())
def test_fuzz_random_dicts(tree):
    _load_or_error(lambda: config_from_dict(tree, "fuzz"))
    _load_or_error(lambda: loads_config(_dump_doc(tree), "fuzz.toml"))


@_fuzz
@given(_mutated())
def test_fuzz_mutated_valid_configs(tree):
    _load_or_error(lambda: config_from_dict(tree, "fuzz"))
    _load_or_error(lambda: loads_config(_dump_doc(tree), "fuzz.toml"))


@_fuzz
@given(st.lists(st.one_of(st.text(max_size=30), st.builds(lambda k, v: f"{k}={v}", _keys, st.text(max_size=20))),
                max_size=3))
def test_fuzz_overrides(overrides):
    _load_or_error(lambda: loads_config(BOTH, "fuzz.toml", overrides=overrides))


@_fuzz
@given(st.binary(max_size=100))
def test_fuzz_random_bytes_file(tmp_path, data):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    _load_or_error(lambda: load_config(path))
    try:
        load_settings(path)
    except ConfigError:
        pass


@_fuzz
@given(_mutated())
def test_fuzz_reaches_valid_configs(tree):
    """The mutation fuzzer reaches the success path (otherwise the round-trip assertions would test nothing)."""
    _load_or_error(lambda: config_from_dict(tree, "fuzz"))


def test_fuzz_outcome_mix():
    _outcomes.update(ok=0, error=0)
    test_fuzz_reaches_valid_configs()
    assert _outcomes["ok"] >= 10 and _outcomes["error"] >= 10, _outcomes
    assert os.path.isdir("data/mimeta")
