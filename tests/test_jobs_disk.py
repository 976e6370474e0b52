"""Disk space: launch and checkpoint checks, `du` sizes, `gc` of old checkpoints and orphaned caches."""

from __future__ import annotations

import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bttui.cli import app
from bttui.config.settings import MachineSettings
from bttui.errors import BttuiError
from bttui.runs import disk
from bttui.runs.store import Store

Usage = namedtuple("Usage", "total used free")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("BTTUI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "200")
    return Store(tmp_path / "store")


def fake_free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: Usage(10 * free, 9 * free, free))


def make_run(store: Store, tmp_path: Path, status: str = "completed", name: str = "r", data_root: Path | None = None):
    from bttui.config.load import loads_config

    root = data_root or tmp_path / "data"
    cfg = loads_config(f'name = "{name}"\n[data]\nroot = "{root}"\n[finetune]\ninit = ["random"]\n', check_paths=False)
    paths = store.create_run(cfg)
    data = json.loads(paths.status.read_text())
    data["status"] = status
    paths.status.write_text(json.dumps(data))
    return paths


def write(path: Path, size: int, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_ensure_free_names_what_and_where(tmp_path, monkeypatch):
    fake_free(monkeypatch, 100 * disk.MIB)
    disk.ensure_free(tmp_path, 10 * disk.MIB, "checkpoint x.pt")
    with pytest.raises(BttuiError, match=r"checkpoint big\.pt in .*needs 1\.1 GiB.*100\.0 MiB is free"):
        disk.ensure_free(tmp_path / "not" / "made", disk.GIB, "checkpoint big.pt")


def test_estimates_and_launch_threshold(tmp_path, monkeypatch):
    from bttui.config.load import loads_config

    cfg = loads_config(f'[data]\nroot = "{tmp_path}"\n[pretrain]\nprojector = [2048, 2048]\n', check_paths=False)
    est = disk.estimate_checkpoint_bytes(cfg)
    params = 11_176_512 + 512 * 2048 + 3 * 2048 + 2048 * 2048 + 3 * 2048
    assert est == params * 4 * 3  # fp32 weights + two Adam moments
    assert disk.required_free_bytes(cfg, MachineSettings()) == disk.GIB  # 3 x 0.23 GB < 1 GiB
    assert disk.required_free_bytes(cfg, MachineSettings(min_free_gb=0.1)) == 3 * est
    assert disk.required_free_bytes(cfg, MachineSettings(min_free_gb=0)) == 0
    fake_free(monkeypatch, 512 * disk.MIB)
    with pytest.raises(BttuiError) as err:
        disk.check_free_space(tmp_path / "store", cfg, MachineSettings())
    assert str(tmp_path / "store") in str(err.value) and "512.0 MiB free" in str(err.value) and "1.0 GiB" in str(err.value)
    disk.check_free_space(tmp_path / "store", cfg, MachineSettings(min_free_gb=0))


def test_estimate_bytes_of_a_checkpoint_payload():
    import torch

    payload = {"model": {"w": torch.zeros(10, 10), "b": torch.zeros(10, dtype=torch.float64)},
               "opt": [torch.zeros(5, dtype=torch.uint8)], "epoch": 3}
    assert disk.estimate_bytes(payload) == 400 + 80 + 5


def test_pretrain_checkpoint_write_fails_clearly_on_a_full_disk(tmp_path, monkeypatch):
    import torch

    from bttui.train.pretrain import save_atomic

    fake_free(monkeypatch, 1 * disk.MIB)
    target = tmp_path / "ckpt" / "pretrain_epoch0001.pt"
    with pytest.raises(BttuiError, match="checkpoint pretrain_epoch0001.pt"):
        save_atomic({"w": torch.zeros(1000)}, target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_run_command_refuses_a_full_store(tmp_path, monkeypatch, store):
    fake_free(monkeypatch, 10 * disk.MIB)
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\nroot = "{tmp_path}"\n[finetune]\ninit = ["random"]\n')
    result = CliRunner().invoke(app, ["run", str(config), "--detach"])
    assert result.exit_code == 2 and "Not enough free disk space in the run store" in result.stderr
    assert store.list_runs() == []


def test_du_sizes_per_run(store, tmp_path):
    paths = make_run(store, tmp_path)
    write(paths.checkpoints / "pretrain_final.pt", 30_000)
    write(paths.artifacts / "cells" / "a" / "x.json", 5_000)
    write(paths.log, 2_000)
    write(store.root / "cache" / "x.npy", 7_000)
    usage = disk.run_usage(paths.dir)
    assert 30_000 <= usage["checkpoints"] < 40_000 and 5_000 <= usage["artifacts"] < 12_000
    assert usage["logs"] >= 2_000 and usage["total"] == sum(v for k, v in usage.items() if k != "total")
    result = CliRunner().invoke(app, ["du", "--json"])
    data = json.loads(result.stdout)
    assert [r["id"] for r in data["runs"]] == [paths.id] and data["cache"] >= 7_000
    assert data["total"] >= usage["total"] + 7_000
    table = CliRunner().invoke(app, ["du", paths.id])
    assert table.exit_code == 0 and paths.id in table.stdout and "KiB" in table.stdout


def test_gc_keeps_last_final_and_best_of_finished_runs(store, tmp_path):
    done = make_run(store, tmp_path, "completed", "done")
    for epoch, t in ((10, 1000), (20, 2000), (30, 3000)):
        write(done.checkpoints / f"pretrain_epoch{epoch:04d}.pt", 10_000, mtime=t)
    write(done.checkpoints / "pretrain_final.pt", 10_000, mtime=3500)
    write(done.checkpoints / "best.pt", 10_000, mtime=100)
    write(done.checkpoints / ".pretrain_final.pt.123.tmp", 4_096)
    live = make_run(store, tmp_path, "queued", "live")
    write(live.checkpoints / "pretrain_epoch0010.pt", 10_000, mtime=1000)
    write(live.checkpoints / "pretrain_epoch0020.pt", 10_000, mtime=2000)

    dry = CliRunner().invoke(app, ["gc", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "pretrain_epoch0010.pt" in dry.stdout and "pretrain_epoch0020.pt" in dry.stdout
    assert "would be freed" in dry.stdout and "3 files" in dry.stdout
    assert len(list(done.checkpoints.iterdir())) == 6  # nothing removed
    real = CliRunner().invoke(app, ["gc"])
    assert real.exit_code == 0 and "removed 3 files" in real.stdout
    assert sorted(p.name for p in done.checkpoints.iterdir()) == ["best.pt", "pretrain_epoch0030.pt",
                                                                    "pretrain_final.pt"]
    assert len(list(live.checkpoints.iterdir())) == 2  # a queued/running run is never touched


def test_gc_drops_caches_of_vanished_datasets(store, tmp_path):
    from bttui.data.synth import synthesize
    from bttui.train.data import _hdf5_fingerprint, cache_key

    data = tmp_path / "data"
    synthesize(data, datasets=["organs_axial", "organs_coronal"], per_class=4, image_size=32)
    make_run(store, tmp_path, data_root=data)
    h5 = data / "organs_axial" / "images.hdf5"
    assert disk.hdf5_fingerprint(h5) == _hdf5_fingerprint(h5)  # the copy in disk.py follows data.py
    cache = store.root / "cache"
    kept = write(cache / cache_key("organs_axial", 32, False, _hdf5_fingerprint(h5) + "-c1"), 3_000)
    h5b = data / "organs_coronal" / "images.hdf5"
    gone = write(cache / cache_key("organs_coronal", 32, False, _hdf5_fingerprint(h5b) + "-c1"), 3_000)
    stats = write(cache / (gone.name[:-4] + ".mimeta-train.stats.json"), 100)
    assert disk.CACHE_RE.match(kept.name) and disk.CACHE_RE.match(gone.name)
    shutil.rmtree(data / "organs_coronal")
    plan = disk.gc_plan(store, MachineSettings())
    assert sorted(r.path.name for r in plan) == sorted([gone.name, stats.name])
    assert disk.apply(plan) >= 3_100
    assert kept.exists() and not gone.exists() and not stats.exists()
