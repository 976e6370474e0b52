"""Machine-level job settings: databases of stores on network filesystems, the machine's on_finish hook."""

from __future__ import annotations

from pathlib import Path

import pytest

from bttui.runs import store as store_mod
from bttui.runs.index import Index
from bttui.runs.queue import Queue, queue_path
from bttui.runs.store import Store, db_dir, filesystem_type


@pytest.fixture(autouse=True)
def _fresh_db_dir_cache(monkeypatch):
    monkeypatch.setattr(store_mod, "_db_dirs", {})


def test_filesystem_type_reads_proc_mounts(tmp_path):
    fs = filesystem_type(tmp_path / "not" / "made" / "yet")
    assert fs is not None and fs == filesystem_type(tmp_path)
    assert filesystem_type("/proc") == "proc"


@pytest.mark.parametrize("fs, local", [("nfs4", True), ("cifs", True), ("fuse.sshfs", True), ("ext4", False),
                                       ("xfs", False), ("tmpfs", False)])
def test_db_dir_by_filesystem(tmp_path, monkeypatch, fs, local):
    monkeypatch.setattr(store_mod, "filesystem_type", lambda path: fs)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "store"
    chosen = db_dir(root)
    if local:
        assert chosen.parent == tmp_path / "xdg" / "bttui" and len(chosen.name) == 16
        assert db_dir(tmp_path / "other") != chosen  # one folder per store
    else:
        assert chosen == root / ".bttui"


def test_network_store_keeps_runs_there_and_databases_local(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "filesystem_type", lambda path: "nfs")
    local = tmp_path / "local-dbs"
    settings = tmp_path / "settings.toml"
    settings.write_text(f'reservations_dir = "{tmp_path / "res"}"\nlocal_db_dir = "{local}"\n')
    monkeypatch.setenv("BTTUI_CONFIG", str(settings))
    from bttui.config.load import loads_config

    store = Store(tmp_path / "store")
    paths = store.create_run(loads_config('[data]\nroot = "/x"\n[finetune]\ninit = ["random"]\n', check_paths=False))
    Queue(store).add(paths.id)
    rows = Index(store).refresh()
    assert [r["id"] for r in rows] == [paths.id]
    assert queue_path(store.root).parent.parent == local and queue_path(store.root).is_file()
    assert (db_dir(store.root) / "index.sqlite").is_file()
    assert not (store.root / ".bttui" / "index.sqlite").exists() and not (store.root / ".bttui" / "queue.sqlite").exists()
    assert (Path(paths.dir) / "run.json").is_file()


def test_machine_on_finish_runs_when_the_config_has_none(tmp_path, monkeypatch):
    from bttui.train.runner import Runner

    out = tmp_path / "hook.txt"
    settings = tmp_path / "settings.toml"
    settings.write_text(f'on_finish = "echo $BTTUI_RUN_ID $BTTUI_STATUS > {out}"\n')
    monkeypatch.setenv("BTTUI_CONFIG", str(settings))
    run_dir = tmp_path / "20240101-000000-x-abcd"
    run_dir.mkdir()
    runner = Runner(run_dir)
    runner._on_finish("failed")
    assert out.read_text().split() == [run_dir.name, "failed"]

    class Cfg:
        on_finish = f"echo config > {out}"

    runner.cfg = Cfg()  # the config's own hook wins over the machine's
    runner._on_finish("completed")
    assert out.read_text().strip() == "config"
