"""The pieces behind the fixed reliability findings, checked directly (no trainer processes): fast and exact."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

import faultkit


# ----------------------------------------------------------------- CLI: storage errors become one paragraph


@pytest.mark.parametrize("code, words", [
    (errno.EROFS, "read-only"), (errno.ENOSPC, "disk is full"), (errno.EDQUOT, "quota"),
    (errno.EACCES, "permission denied"), (errno.EPERM, "not permitted"),
])
def test_storage_errors_name_the_path_and_the_fix(code, words):
    from bttui.cli.app import storage_error

    err = storage_error(OSError(code, os.strerror(code), "/store/run/status.json"))
    assert err is not None and err.exit_code == 2
    text = str(err)
    assert text.startswith("Cannot write /store/run/status.json: ") and words in text.lower(), text
    assert "--store" in text and "\n" not in text


def test_other_os_errors_are_not_disguised():
    from bttui.cli.app import storage_error

    assert storage_error(OSError(errno.EIO, "Input/output error", "/x")) is None
    assert storage_error(ValueError("no")) is None


def test_cli_turns_a_storage_oserror_into_exit_2(tmp_path, monkeypatch):
    """Any command: an OSError(EROFS) from inside becomes `bttui: error: ...` and exit 2, no traceback."""
    import bttui.runs.store as store_mod
    from bttui.cli import main

    def refuse(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "store"))

    monkeypatch.setattr(store_mod.Store, "resolve", refuse)
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(tmp_path / "store"), "show", "some-run"])
    assert exit_info.value.code == 2


# ----------------------------------------------------------------- trainer: final status on a full disk


def test_overwrite_in_place_keeps_one_valid_json_object(tmp_path):
    from bttui.train.runner import overwrite_in_place

    path = tmp_path / "status.json"
    path.write_text(json.dumps({"status": "running", "reason": None, "filler": "x" * 300}, indent=1) + "\n")
    inode, size = path.stat().st_ino, path.stat().st_size
    overwrite_in_place(path, {"status": "failed", "reason": "no space"})
    assert path.stat().st_ino == inode and path.stat().st_size == size  # same file, same blocks, padded
    assert json.loads(path.read_text()) == {"status": "failed", "reason": "no space"}
    overwrite_in_place(path, {"status": "failed", "reason": "y" * 1000})  # longer: grows, still valid
    assert json.loads(path.read_text())["reason"] == "y" * 1000


def test_disk_reasons_are_actionable():
    from bttui.train.runner import disk_reason

    full = disk_reason(OSError(errno.ENOSPC, "No space left on device", "/s/r/events.jsonl"))
    assert full.startswith("no space left on device while writing /s/r/events.jsonl: ") and "--store" in full
    assert "quota" in disk_reason(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert "read-only" in disk_reason(OSError(errno.EROFS, "Read-only file system", "/s"))
    assert disk_reason(OSError(errno.EIO, "Input/output error")) is None
    assert disk_reason(RuntimeError("x")) is None


# ----------------------------------------------------------------- trainer: cell_end replay bookkeeping


def test_completed_cell_ends_reads_the_last_event_per_cell(tmp_path):
    from bttui.runs.events import EventWriter
    from bttui.train.runner import completed_cell_ends

    path = tmp_path / "events.jsonl"
    with EventWriter(path) as events:
        events.write("cell_end", cell="a", result={"status": "failed"})
        events.write("cell_end", cell="a", result={"status": "completed"})  # rerun on resume, completed
        events.write("cell_end", cell="b", result={"status": "completed"})
        events.write("cell_end", cell="b", result={"status": "failed"})
        events.write("log", message="cell_end mentioned in a message", cell="c")
    with open(path, "ab") as fh:
        fh.write(b'{"t":1,"type":"cell_end","cell":"d","result":{"status":"comp')  # torn, unfinished
    assert completed_cell_ends(path) == {"a"}
    assert completed_cell_ends(tmp_path / "missing.jsonl") == set()


# ----------------------------------------------------------------- pretraining: OOM and non-finite health


def test_oom_reason_names_key_batch_and_smaller_value():
    from bttui.train.pretrain import oom_reason

    reason = oom_reason("pretrain.batch_size", 256, "fp32", 224, " in step 3 (epoch 1)")
    assert reason.startswith("CUDA out of memory in step 3 (epoch 1) at pretrain.batch_size = 256 (fp32, 224 px")
    assert "--set pretrain.batch_size=128" in reason and 'pretrain.precision="bf16"' in reason
    assert "precision" not in oom_reason("finetune.batch_size", 1, "bf16", 64).split(";")[1]
    assert "--set finetune.batch_size=1" in oom_reason("finetune.batch_size", 1, "bf16", 64)
    assert "--set pretrain.batch_size=2" in oom_reason("pretrain.batch_size", 3, "bf16", 64)  # never below 2


def test_effective_rank_of_non_finite_features_is_nan_not_an_error():
    import math

    import torch

    from bttui.train.pretrain import effective_rank

    feats = torch.randn(16, 8)
    assert 1.0 < effective_rank(feats) <= 8.0
    feats[3, 2] = float("inf")
    assert math.isnan(effective_rank(feats))
    assert math.isnan(effective_rank(torch.full((4, 4), float("nan"))))


# ----------------------------------------------------------------- temp leftovers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_temp_removals_spare_live_writers_and_young_files(tmp_path):
    from bttui.runs import disk

    run = tmp_path / "store" / "20240101-000000-r-abcd"
    (run / "checkpoints").mkdir(parents=True)
    (run / "artifacts" / "cells" / "c1").mkdir(parents=True)
    dead, me = _dead_pid(), os.getpid()
    dead_ckpt = run / "checkpoints" / f".pretrain_epoch0002.pt.{dead}.tmp"
    own_ckpt = run / "checkpoints" / f".pretrain_epoch0003.pt.{me}.tmp"  # this process is writing it
    dead_feats = run / "artifacts" / "cells" / "c1" / f".test_features.{dead}.tmp.npz"
    old_status = run / ".status.json.0a1b2c3d.tmp"
    young_status = run / ".summary.json.deadbeef.tmp"
    complete = run / "checkpoints" / "pretrain_epoch0001.pt"
    for path in (dead_ckpt, own_ckpt, dead_feats, old_status, young_status, complete):
        path.write_bytes(b"x" * 10)
    old = time.time() - 2 * disk.RUN_TEMP_S
    os.utime(old_status, (old, old))
    names = sorted(r.path.name for r in disk.run_temp_removals(run))
    assert names == sorted([dead_ckpt.name, dead_feats.name, old_status.name])
    later = time.time() + 2 * disk.RUN_TEMP_S
    assert young_status.name in {r.path.name for r in disk.run_temp_removals(run, now=later)}


def test_store_temp_removals_wait_an_hour(tmp_path):
    from bttui.runs import disk

    store = tmp_path / "store"
    (store / ".tmp-20240101-000000-r-abcd").mkdir(parents=True)
    (store / ".deleting-20240101-000000-q-abcd").mkdir()
    (store / "cache").mkdir()
    (store / "cache" / ".tmp-organs-s32-native-v1-0123456789abcdef-c1.npy-1a2b3c4d.npy").write_bytes(b"x")
    (store / "cache" / "organs-s32-native-v1-0123456789abcdef-c1.npy").write_bytes(b"x")
    assert disk.store_temp_removals(store) == []
    later = time.time() + disk.STALE_TEMP_S + 60
    names = sorted(r.path.name for r in disk.store_temp_removals(store, now=later))
    assert names == sorted([".tmp-20240101-000000-r-abcd", ".deleting-20240101-000000-q-abcd",
                            ".tmp-organs-s32-native-v1-0123456789abcdef-c1.npy-1a2b3c4d.npy"])


def test_launch_refuses_a_read_only_store_before_the_space_check(tmp_path, monkeypatch):
    from bttui.errors import BttuiError
    from bttui.runs import disk

    class Flags:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(disk.os, "statvfs", lambda _p: Flags())
    with pytest.raises(BttuiError, match="read-only filesystem"):
        disk.check_free_space(tmp_path)


# ----------------------------------------------------------------- logs --raw


def test_logs_raw_keeps_the_bytes(tmp_path):
    store = tmp_path / "store"
    paths = faultkit.create_run(store, faultkit.tiny_toml(tmp_path, finetune=False), tmp_path / "cfg")
    data = "naïve \x1b[31mred\x1b[0m\tend\r\n".encode() + b"\xff bad byte\n"
    paths.log.write_bytes(data)
    env = faultkit.base_env(tmp_path)
    raw = subprocess.run([sys.executable, "-m", "bttui", "--store", str(store), "logs", paths.dir.name, "--raw"],
                         env=env, capture_output=True, timeout=60)
    assert raw.returncode == 0 and raw.stdout == data
    shown = subprocess.run([sys.executable, "-m", "bttui", "--store", str(store), "logs", paths.dir.name],
                           env=env, capture_output=True, timeout=60)
    assert shown.returncode == 0
    assert shown.stdout.decode() == "naïve \\e[31mred\\e[0m\tend\n\ufffd bad byte\n"
