"""Disk full, then read-only: run inside `unshare -m` (a private mount namespace) by test_disk.py; prints JSON facts.

usage: unshare -m python disk_scenario.py MOUNT_DIR MIMETA_ROOT SIZE_MB

A tmpfs of SIZE_MB mounted at MOUNT_DIR holds the store. A tiny run checkpoints
every epoch; the tmpfs holds one checkpoint (~128 MiB) but not two, so the
second epoch's checkpoint write meets a real ENOSPC. Then the tmpfs is remounted
read-only and the store is resumed, listed and shown (real EROFS).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faultkit  # noqa: E402


def tail(text: str, n: int = 2500) -> str:
    return text[-n:]


def cli(args: list, env: dict) -> dict:
    proc = faultkit.bttui(args, env, timeout=120)
    return {"rc": proc.returncode, "stdout": tail(proc.stdout), "stderr": tail(proc.stderr)}


def main() -> None:
    mount, data_root, size_mb = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(mount)], check=True)
    out: dict = {}
    home = mount.parent / "home"
    env = faultkit.base_env(home)
    store = mount / "store"
    config = home / "cfg" / "exp.toml"
    paths = faultkit.create_run(store, faultkit.tiny_toml(data_root), config.parent)
    run_id = paths.dir.name
    out["run_id"] = run_id

    # ---- disk full during the second checkpoint
    out["enospc_rc"] = faultkit.run_trainer(paths, env)
    from bttui.runs.events import read_events
    from bttui.runs.store import Store

    record = Store(store).get(run_id)
    out["enospc_status"], out["enospc_reason"] = record.status, record.reason
    out["enospc_checkpoints"] = faultkit.load_checkpoints(paths.checkpoints)
    out["enospc_leftovers"] = sorted(p.name for p in paths.checkpoints.iterdir() if p.name.startswith("."))
    log = read_events(paths.events)
    out["enospc_events"] = {"n": len(log.events), "torn": log.torn, "partial": log.partial}
    out["enospc_ls"] = cli(["--store", store, "ls", "--json"], env)
    out["enospc_show"] = cli(["--store", store, "show", run_id, "--json"], env)
    out["enospc_train_log"] = tail(paths.log.read_text(errors="replace"))

    # ---- the same store, read-only
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    trainer = subprocess.run([sys.executable, "-m", "bttui.train", str(paths.dir), "--resume"], env=env,
                             capture_output=True, text=True, timeout=120)
    out["erofs_trainer"] = {"rc": trainer.returncode, "stdout": tail(trainer.stdout), "stderr": tail(trainer.stderr)}
    out["erofs_resume"] = cli(["--store", store, "resume", run_id], env)
    out["erofs_run"] = cli(["--store", store, "run", config], env)
    out["erofs_ls"] = cli(["--store", store, "ls", "--json"], env)
    out["erofs_show"] = cli(["--store", store, "show", run_id], env)
    out["erofs_checkpoints"] = faultkit.load_checkpoints(paths.checkpoints)
    out["erofs_status"] = Store(store).get(run_id).status
    full_disk(mount.parent / "mnt2", data_root, size_mb, home, env, out)
    print("RESULT " + json.dumps(out, default=str))


def full_disk(mount: Path, data_root: Path, size_mb: int, home: Path, env: dict, out: dict) -> None:
    """A real ENOSPC past every free-space check: the trainer is held stopped in epoch 2 (its epoch-1 checkpoint
    written) while a filler file takes every free byte, then let go."""
    import os
    import signal

    from bttui.runs.events import read_events
    from bttui.runs.launch import launch
    from bttui.runs.store import Store

    mount.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(mount)], check=True)
    store = mount / "store"
    paths = faultkit.create_run(store, faultkit.tiny_toml(data_root), home / "cfg2")
    proc = launch(paths, detach=False, env={**env, "BTTUI_FAULT": "pretrain.step.after_backward@3:stop"})
    out["full_was_stopped"] = wait_stopped(proc.pid)
    filler = mount / "filler"
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass
    try:
        with open(filler, "ab") as fh:  # down to the last page
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass
    out["full_free_bytes"] = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    os.kill(proc.pid, signal.SIGCONT)
    out["full_rc"] = proc.wait(timeout=120)
    record = Store(store).get(paths.dir.name)
    out["full_status"], out["full_reason"] = record.status, record.reason
    try:
        json.loads(paths.status.read_text())
        out["full_status_json_valid"] = True
    except ValueError:
        out["full_status_json_valid"] = False
    log = read_events(paths.events)
    out["full_events"] = {"n": len(log.events), "torn": log.torn, "partial": log.partial}
    out["full_ls"] = cli(["--store", store, "ls", "--json"], env)
    filler.unlink()
    out["full_checkpoints"] = faultkit.load_checkpoints(paths.checkpoints)
    out["full_train_log"] = tail(paths.log.read_text(errors="replace"), 4000)


def wait_stopped(pid: int, timeout: float = 120) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return True
        time.sleep(0.05)
    return False


if __name__ == "__main__":
    main()
