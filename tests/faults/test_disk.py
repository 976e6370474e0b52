"""Disk full (real ENOSPC) and read-only store (real EROFS) on a small tmpfs inside `unshare -m`.

As root, chmod blocks nothing and RLIMIT_FSIZE gives EFBIG, so the store sits
on a 200 MiB tmpfs mounted in a private mount namespace: it holds one
checkpoint (~128 MiB) but not two. The scenario itself (disk_scenario.py) runs
inside the namespace and reports what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TMPFS_MB = 200


def _namespace_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs (unshare -m)"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare/mount not installed"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && "
                            "mount -o remount,ro /mnt && ! touch /mnt/x 2>/dev/null"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -m cannot mount a tmpfs here: {probe.stderr.strip() or probe.returncode}"
    return None


@pytest.fixture(scope="module")
def disk(mimeta_root, tmp_path_factory) -> dict:
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    base = tmp_path_factory.mktemp("disk")
    mount = base / "mnt"
    mount.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["unshare", "-m", sys.executable, str(HERE / "disk_scenario.py"), str(mount),
                           str(mimeta_root), str(TMPFS_MB)], capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_disk_full_fails_the_run_and_keeps_the_last_checkpoint(disk):
    context = json.dumps(disk, indent=1)[:6000]
    assert disk["enospc_rc"] in (1, 2) and disk["enospc_status"] == "failed", context
    # epoch 1's checkpoint is complete and loads; epoch 2's half-written temp file was removed
    assert disk["enospc_checkpoints"] == {"pretrain_epoch0001.pt": None}, context
    assert disk["enospc_leftovers"] == [], context
    assert disk["enospc_events"]["torn"] == 0 and not disk["enospc_events"]["partial"], context
    # the store stays readable on the full disk
    assert disk["enospc_ls"]["rc"] == 0 and disk["enospc_show"]["rc"] == 0, context
    (row,) = json.loads(disk["enospc_ls"]["stdout"])
    assert row["id"] == disk["run_id"] and row["status"] == "failed"


def test_disk_nearly_full_reason_is_actionable(disk):
    """The trainer checks free space before a checkpoint: the reason names the folder, the need and the fix."""
    reason = disk["enospc_reason"] or ""
    assert "free disk space" in reason and "checkpoints" in reason and "MiB" in reason, reason
    assert "resume" in reason and "\n" not in reason, reason


def test_real_enospc_keeps_the_last_checkpoint_and_the_store_readable(disk):
    """Every free byte taken while the trainer is held in epoch 2: its next write meets a real ENOSPC."""
    context = json.dumps({k: v for k, v in disk.items() if k.startswith("full")}, indent=1)[:6000]
    assert disk["full_was_stopped"] and disk["full_free_bytes"] == 0, context
    assert disk["full_rc"] not in (0, -9), context  # the trainer exited on its own, not killed
    assert disk["full_checkpoints"] == {"pretrain_epoch0001.pt": None}, context
    assert disk["full_events"]["torn"] == 0, context  # at most an unfinished last line, never a bad one inside
    assert disk["full_ls"]["rc"] == 0 and "Traceback" not in disk["full_ls"]["stderr"], context
    assert disk["full_status"] in ("failed", "crashed"), context


def test_real_enospc_is_recorded_as_failed_with_the_cause(disk):
    """The final status cannot get a temp file on the full disk: it is rewritten in place, with the cause."""
    context = json.dumps({k: v for k, v in disk.items() if k.startswith("full")}, indent=1)[:6000]
    assert disk["full_status"] == "failed", context
    reason = disk["full_reason"] or ""
    # whichever write met the full disk first (an event or a status update) is named
    assert reason.startswith("no space left on device while writing "), reason
    assert reason.split(": ")[0].endswith(("events.jsonl", "status.json")), reason
    assert "--store" in reason and "resume" in reason and "\n" not in reason, reason
    assert disk["full_rc"] == 1, context
    assert "could not write the final status" not in disk["full_train_log"], context
    assert disk["full_status_json_valid"], context  # padded in place: still one valid JSON object


def test_read_only_store_stays_readable(disk):
    context = json.dumps(disk, indent=1)[:6000]
    assert disk["erofs_ls"]["rc"] == 0 and "Traceback" not in disk["erofs_ls"]["stderr"], context
    (row,) = json.loads(disk["erofs_ls"]["stdout"])
    assert row["status"] == "failed"
    assert disk["erofs_show"]["rc"] == 0 and disk["run_id"] in disk["erofs_show"]["stdout"], context
    assert disk["erofs_checkpoints"] == {"pretrain_epoch0001.pt": None}
    assert disk["erofs_status"] == "failed"


def test_read_only_store_trainer_fails_clearly(disk):
    trainer = disk["erofs_trainer"]
    assert trainer["rc"] == 1
    assert "Traceback" not in trainer["stderr"] and "read-only" in trainer["stderr"].lower(), trainer["stderr"]
    assert disk["run_id"] in trainer["stderr"] and trainer["stderr"].count("\n") == 1, trainer["stderr"]


def test_read_only_store_cli_fails_clearly(disk):
    for key in ("erofs_run", "erofs_resume"):
        result = disk[key]
        assert result["rc"] == 2, (key, result)
        assert "Traceback" not in result["stderr"] and "read-only" in result["stderr"].lower(), (key, result)
        assert result["stderr"].startswith("bttui: error: ") and "--store" in result["stderr"], (key, result)
    assert disk["run_id"] in disk["erofs_resume"]["stderr"]  # names the file it could not write
