"""Presets through `bttui config show`: every preset key is printed with its resolved value and its source."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bttui.config import PRESETS, load_config_with_sources


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")


def _show(path, *args):
    from bttui.cli.app import app

    result = CliRunner().invoke(app, ["config", "show", str(path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _row(output: str, key: str) -> str:
    rows = [line for line in output.splitlines() if f" {key} " in f" {line} " or line.strip().startswith(key + " ")]
    assert rows, f"{key} missing from config show output"
    return rows[0]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_show_prints_every_preset_key_with_its_source(tmp_path, name):
    path = tmp_path / "exp.toml"
    path.write_text(f'preset = "{name}"\n\n[data]\nimage_size = 32\nsynthesize = true\n\n[pretrain]\nepochs = 3\n\n[finetune]\n')
    cfg, sources = load_config_with_sources(path)
    out = _show(path)
    for key, value in PRESETS[name].items():
        if key in ("pretrain.epochs", "data.image_size", "data.synthesize"):
            continue  # set in the file above: the file wins (checked below)
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == value, key
        assert sources[key] == f"preset:{name}", key
        row = _row(out, key)
        assert f"preset:{name}" in row, row
    # Keys written in the file beat the preset and say so.
    assert "exp.toml:8" in _row(out, "pretrain.epochs") and cfg.pretrain.epochs == 3
    assert "default" in _row(out, "finetune.epochs")


def test_set_override_beats_the_preset_in_config_show(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('preset = "reference"\n[data]\nsynthesize = true\n[pretrain]\n[finetune]\n')
    out = _show(path, "--set", "pretrain.batch_size=512")
    row = _row(out, "pretrain.batch_size")
    assert "512" in row and "--set" in row
    assert "preset:reference" in _row(out, "pretrain.optimizer") and "lars" in _row(out, "pretrain.optimizer")


def test_presets_resolve_to_trainable_engine_settings(tmp_path):
    """Every preset builds the optimiser it names (LARS per-256 scaling for the reference recipe)."""
    import torch

    from bttui.config import loads_config
    from bttui.train.pretrain import LARS, build_optimizer, lr_factor

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    for name in sorted(PRESETS):
        cfg = loads_config(f'preset = "{name}"\n[pretrain]\n[finetune]\n', "exp.toml", check_paths=False)
        opt = build_optimizer(net, cfg.pretrain)
        if cfg.pretrain.optimizer == "lars":
            assert isinstance(opt, LARS)
            scale = cfg.pretrain.batch_size / 256
            assert [g["base_lr"] for g in opt.param_groups] == pytest.approx([0.2 * scale, 0.0048 * scale])
            assert [g["exclude"] for g in opt.param_groups] == [False, True]
        else:
            assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["base_lr"] == 0.03
        if cfg.pretrain.schedule == "constant":
            assert lr_factor(5, 100, 10, 0.001, "constant") == 1.0
