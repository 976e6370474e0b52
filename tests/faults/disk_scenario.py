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
    print("RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    main()
