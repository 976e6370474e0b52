"""Run store: ids and slugs, atomic writes, run creation, listing and reference resolution."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bttui.config.load import load_config
from bttui.config.schema import ExperimentConfig, FinetuneConfig
from bttui.errors import BttuiError
from bttui.runs import atomic, store as store_mod
from bttui.runs.atomic import read_json, write_json_atomic, write_text_atomic
from bttui.runs.layout import RUN_ID_RE, RunPaths, new_run_id, slugify
from bttui.runs.status import COMPLETED, CRASHED, QUEUED, RUNNING, write_status
from bttui.runs.store import Store, resolve_store_root


def small_config(name: str = "exp") -> ExperimentConfig:
    cfg = ExperimentConfig(name=name)
    cfg.data.root = "/nonexistent/mimeta"  # absolute, as load_config returns it
    cfg.finetune = FinetuneConfig(datasets=["organs_axial"], init=["imagenet"], strategy=["linear"],
                                  label_fractions=[0.5, 1.0], seeds=[0])
    return cfg


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("name, slug", [
    ("My Experiment", "my-experiment"),
    ("../../etc", "etc"),
    ("/abs/path", "abs-path"),
    ("a\0b", "a-b"),
    ("Übersicht Lunge", "ubersicht-lunge"),
    ("名前", "run"),
    ("", "run"),
    ("---", "run"),
    ("..", "run"),
    ("a" * 100, "a" * 40),
    ("x" * 39 + "-yz", "x" * 39),  # cut at 40 leaves a trailing "-", which goes too
])
def test_slugify(name, slug):
    assert slugify(name) == slug


@pytest.mark.parametrize("name", ["../../etc", "/abs", "a\0b", "名前/../x", "C:\\win", "\u202e.txt", "a" * 300])
def test_run_id_is_one_safe_component(name, tmp_path):
    run_id = new_run_id(name)
    assert RUN_ID_RE.match(run_id), run_id
    assert "/" not in run_id and ".." not in run_id and "\0" not in run_id
    assert (tmp_path / run_id).resolve().parent == tmp_path.resolve()


def test_new_run_id_uses_utc_time():
    when = dt.datetime(2024, 11, 25, 23, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-2)))
    run_id = new_run_id("Test", when)
    assert run_id.startswith("20241126-010405-test-")
    assert len(run_id.rsplit("-", 1)[1]) == 4
    ids = {new_run_id("x", when) for _ in range(50)}
    assert len(ids) > 40


def test_run_paths():
    p = RunPaths("/s/20240101-000000-a-0000")
    assert p.dir == Path("/s/20240101-000000-a-0000")
    assert p.id == "20240101-000000-a-0000"
    assert (p.run_json.name, p.config_toml.name, p.events.name, p.status.name, p.summary.name, p.log.name,
            p.checkpoints.name, p.artifacts.name) == (
        "run.json", "config.toml", "events.jsonl", "status.json", "summary.json", "train.log",
        "checkpoints", "artifacts")


# ---------------------------------------------------------------- atomic


def test_atomic_write_replaces_and_honours_umask(tmp_path):
    target = tmp_path / "s.json"
    old = os.umask(0o027)
    try:
        write_json_atomic(target, {"a": 1, "loss": float("nan"), "x": [float("inf"), -float("inf")]})
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    text = target.read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}")) == {
        "a": 1, "loss": "nan", "x": ["inf", "-inf"]}
    write_text_atomic(target, "second")
    assert target.read_text() == "second"
    assert os.listdir(tmp_path) == ["s.json"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "s.json"
    write_json_atomic(target, {"v": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        write_json_atomic(target, {"v": 2})
    assert read_json(target) == {"v": 1}
    assert os.listdir(tmp_path) == ["s.json"]


def test_read_json_defaults(tmp_path):
    assert read_json(tmp_path / "missing.json", default={}) == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert read_json(tmp_path / "bad.json", default=7) == 7


# ---------------------------------------------------------------- store root


def test_resolve_store_root_precedence(tmp_path, monkeypatch):
    settings = tmp_path / "settings.toml"
    settings.write_text('store = "from-settings"\n')
    monkeypatch.setenv("BTTUI_CONFIG", str(settings))
    monkeypatch.setenv("BTTUI_STORE", str(tmp_path / "from-env"))
    monkeypatch.chdir(tmp_path)
    assert resolve_store_root(str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_store_root() == tmp_path / "from-env"
    monkeypatch.delenv("BTTUI_STORE")
    assert resolve_store_root() == tmp_path / "from-settings"
    monkeypatch.setenv("BTTUI_CONFIG", str(tmp_path / "none.toml"))
    assert resolve_store_root() == tmp_path / "runs"


# ---------------------------------------------------------------- create / list / resolve


def test_create_run_writes_the_format(tmp_path):
    root = tmp_path / "store"
    s = Store(root)
    assert s.list_runs() == []
    assert not root.exists()  # listing never creates the store
    src = tmp_path / "exp.toml"
    paths = s.create_run(small_config("Lung CT"), config_path=src, sweep_id="sw1")
    assert paths.dir.parent == root
    assert RUN_ID_RE.match(paths.id) and "-lung-ct-" in paths.id
    assert sorted(os.listdir(paths.dir)) == ["artifacts", "checkpoints", "config.toml", "events.jsonl",
                                              "run.json", "status.json"]
    run = json.loads(paths.run_json.read_text())
    assert run["format"] == 1 and run["id"] == paths.id and run["name"] == "Lung CT"
    assert dt.datetime.strptime(run["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert run["created"][:10].replace("-", "") == paths.id[:8]
    assert run["sweep_id"] == "sw1" and run["config_path"] == str(src)
    assert run["lineage"] == {} and set(run["versions"]) >= {"python", "bttui"}
    assert run["hardware"]["cpu_count"] == os.cpu_count()
    assert run["git_commit"] is None or len(run["git_commit"]) == 40
    st = json.loads(paths.status.read_text())
    assert st["status"] == QUEUED and st["pid"] is None and st["cells_total"] == 2
    assert paths.events.read_text() == ""
    # config.toml round-trips through the config loader
    assert load_config(paths.config_toml, check_paths=False) == small_config("Lung CT")


def test_create_run_never_leaves_a_partial_directory(tmp_path, monkeypatch):
    s = Store(tmp_path)

    def fail(path, text):
        raise OSError("no space left")

    monkeypatch.setattr(store_mod, "write_text_atomic", fail)
    with pytest.raises(OSError):
        s.create_run(small_config())
    assert os.listdir(tmp_path) == []


def test_create_run_rejects_invalid_config(tmp_path):
    cfg = small_config()
    cfg.pretrain.epochs = 0
    with pytest.raises(BttuiError):
        Store(tmp_path / "s").create_run(cfg)
    assert not (tmp_path / "s").exists() or os.listdir(tmp_path / "s") == []


def _make_run(s: Store, name: str, run_id: str, status: str = COMPLETED) -> RunPaths:
    """A run directory with a chosen id (ids otherwise depend on the clock)."""
    made = s.create_run(small_config(name))
    target = s.root / run_id
    os.rename(made.dir, target)
    paths = RunPaths(target)
    run = read_json(paths.run_json)
    run["id"] = run_id
    write_json_atomic(paths.run_json, run)
    write_status(paths, {"status": status})
    return paths


def test_list_runs_newest_first_and_skips_non_runs(tmp_path):
    s = Store(tmp_path)
    _make_run(s, "alpha", "20240101-000000-alpha-aaaa")
    _make_run(s, "beta", "20240301-000000-beta-bbbb")
    _make_run(s, "gamma", "20240201-000000-gamma-cccc")
    (tmp_path / ".bttui").mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "run.json").write_text("{}")
    (tmp_path / ".tmp-20250101-000000-x-dddd").mkdir()
    (tmp_path / ".tmp-20250101-000000-x-dddd" / "run.json").write_text("{}")
    (tmp_path / "notes").mkdir()  # no run.json
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{trunc")
    (tmp_path / "file.txt").write_text("x")
    runs = s.list_runs()
    assert [r.id for r in runs] == ["20240301-000000-beta-bbbb", "20240201-000000-gamma-cccc",
                                    "20240101-000000-alpha-aaaa"]
    assert [r.name for r in runs] == ["beta", "gamma", "alpha"]
    assert all(r.status == COMPLETED and r.reason is None for r in runs)


def test_record_accessors(tmp_path):
    s = Store(tmp_path)
    paths = _make_run(s, "alpha", "20240101-000000-alpha-aaaa")
    rec = s.get(paths.id)
    assert rec.summary() == {}
    write_json_atomic(paths.summary, {"pretrain": None, "results": [{"cell": "c", "test_accuracy": 0.5}]})
    assert rec.summary()["results"][0]["test_accuracy"] == 0.5
    assert rec.config_dict()["name"] == "alpha"
    assert rec.config_dict()["finetune"]["datasets"] == ["organs_axial"]
    assert rec.config_dict() == tomllib.loads(paths.config_toml.read_text())
    paths.events.write_text('{"t": 1, "type": "log"}\n')
    assert rec.events().events == [{"t": 1, "type": "log"}]


def test_record_shows_crash_of_dead_trainer(tmp_path):
    s = Store(tmp_path)
    paths = _make_run(s, "alpha", "20240101-000000-alpha-aaaa")
    from bttui.runs.liveness import boot_id, hostname
    write_status(paths, {"status": RUNNING, "pid": 2**22 + 12345, "pid_start": 5, "host": hostname(),
                         "boot_id": boot_id(), "heartbeat": 0})
    rec = s.get(paths.id)
    assert rec.status == CRASHED and "gone" in rec.reason
    assert rec.stored_status == RUNNING


def test_resolve(tmp_path):
    s = Store(tmp_path)
    _make_run(s, "alpha", "20240101-000000-alpha-aaaa")
    _make_run(s, "alpha", "20240102-000000-alpha-abcd")
    _make_run(s, "Beta Run", "20240103-000000-beta-run-bbbb")
    assert s.resolve("20240101-000000-alpha-aaaa").id == "20240101-000000-alpha-aaaa"
    assert s.resolve("20240102").id == "20240102-000000-alpha-abcd"
    assert s.resolve("Beta Run").id == "20240103-000000-beta-run-bbbb"
    assert s.resolve("beta-run").id == "20240103-000000-beta-run-bbbb"
    assert s.resolve("latest").id == "20240103-000000-beta-run-bbbb"
    with pytest.raises(BttuiError) as err:
        s.resolve("2024010")
    assert "20240101-000000-alpha-aaaa" in str(err.value) and "20240102-000000-alpha-abcd" in str(err.value)
    with pytest.raises(BttuiError) as err:
        s.resolve("alpha")
    assert "2 runs" in str(err.value)
    with pytest.raises(BttuiError) as err:
        s.resolve("bta run")
    assert "Beta Run" in str(err.value) and str(tmp_path) in str(err.value)
    for bad in ("../../etc", "/abs", "a\0b", ".bttui", ""):
        with pytest.raises(BttuiError):
            s.resolve(bad)
        if bad:
            with pytest.raises(BttuiError):
                s.get(bad)


def test_resolve_in_empty_store(tmp_path):
    with pytest.raises(BttuiError, match="no runs yet"):
        Store(tmp_path / "none").resolve("x")


def test_run_store_imports_stay_light():
    code = ("import sys, bttui.runs; "
            "print(sorted(m for m in ('torch', 'textual', 'typer', 'rich', 'numpy', 'bttui.config.load') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
