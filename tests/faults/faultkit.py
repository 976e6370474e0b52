"""Shared pieces of the fault suite: tiny configs, real trainer/CLI subprocesses, store and index checks, figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATASET = "organs_sagittal"  # pretraining and fine-tuning set (11 classes)
OTHER_DATASET = "organs_axial"  # a second set, for the disappearing-file fault
PER_CLASS = 4
IMAGE_SIZE = 32

# Figures the suite gathers for docs/reliability.md; printed by the terminal summary hook
# (tests/faults/conftest.py) and written as JSON to $BTTUI_RELIABILITY_JSON when set.
FIGURES: dict[str, Any] = defaultdict(int)
KILL_RESULTS: dict[str, dict] = {}


def tiny_toml(root: Path, *, name: str = "fault", epochs: int = 2, finetune: bool = True, extra: str = "",
              pretrain_extra: str = "", finetune_dataset: str = DATASET, init: str = '["barlow_twins"]') -> str:
    """The smallest meaningful run: 2 pretraining epochs of 2 steps (batch 8), one linear cell of 2 epochs."""
    text = f"""
name = "{name}"
seed = 0
{extra}
[data]
root = "{root.as_posix()}"
image_size = {IMAGE_SIZE}

[pretrain]
datasets = ["{DATASET}"]
batch_size = 8
epochs = {epochs}
projector = [32, 32]
log_every = 1
warmup_epochs = 0
checkpoint_every = 1
keep_last = 2
{pretrain_extra}

[resources]
device = "cpu"
threads = 1
"""
    if finetune:
        text += f"""
[finetune]
datasets = ["{finetune_dataset}"]
init = {init}
strategy = ["linear"]
label_fractions = [1.0]
epochs = 2
batch_size = 16
patience = 0
embeddings = []
"""
    return text


def settings_file(home: Path) -> Path:
    """Machine settings private to one test: its own reservation folder (the default /tmp one is shared by every
    bttui process on the machine) and room for several CPU runs at once."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "bttui-settings.toml"
    if not path.exists():
        path.write_text(f'reservations_dir = "{(home / "reservations").as_posix()}"\nmax_cpu_runs = 8\n')
    return path


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """A child environment: one thread, private settings, no store or fault inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if k not in ("BTTUI_FAULT", "BTTUI_STORE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", BTTUI_CONFIG=str(settings_file(home)),
               PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1", TERM="dumb")
    env.update(extra)
    return env


def bttui(args: list[Any], env: dict[str, str], *, timeout: float = 120, cwd: Path | None = None,
          umask: int = -1) -> subprocess.CompletedProcess:
    """`python -m bttui ARGS` as a real process; stdout/stderr captured as text."""
    return subprocess.run([sys.executable, "-m", "bttui", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL, umask=umask)


def create_run(store_root: Path, toml_text: str, config_dir: Path) -> Any:
    """A queued run made by the real Store from a config file; returns its RunPaths."""
    from bttui.config import load_config
    from bttui.runs.store import Store

    config_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = config_dir / "exp.toml"
    cfg_file.write_text(toml_text)
    return Store(store_root).create_run(load_config(cfg_file), config_path=cfg_file)


def run_trainer(paths: Any, env: dict[str, str], *, resume: bool = False, timeout: float = 180) -> int:
    """The trainer for `paths` through bttui.runs.launch (pid recorded, output to train.log); its exit code."""
    from bttui.runs.launch import launch

    # launch() adds `env` to this process's environment; a blank BTTUI_FAULT disarms an inherited one.
    proc = launch(paths, detach=False, resume=resume, env={"BTTUI_FAULT": "", **env})
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def resume_and_wait(store_root: Path, run_id: str, env: dict[str, str], timeout: float = 180) -> int:
    """Resume a run the way a user would: `bttui resume RUN` in the foreground (queue, trainer, follower)."""
    proc = bttui(["--store", store_root, "resume", run_id], {**env, "BTTUI_FAULT": ""}, timeout=timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
    return proc.returncode


def wait_final(store_root: Path, run_id: str, timeout: float = 120) -> str:
    """Poll the store until the run's effective status is final; returns it."""
    from bttui.runs.status import FINAL_STATUSES
    from bttui.runs.store import Store

    deadline = time.monotonic() + timeout
    while True:
        status = Store(store_root).get(run_id).status
        if status in FINAL_STATUSES or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def comparable(rows: list[dict]) -> list[dict]:
    """Index rows without the refresh time (the only column allowed to differ between two indexes)."""
    return sorted(({k: v for k, v in r.items() if k != "updated"} for r in rows), key=lambda r: r["id"])


def live_rows(store_root: Path) -> list[dict]:
    """The store's own index (<store>/.bttui/index.sqlite), refreshed incrementally."""
    from bttui.runs.index import Index

    index = Index(store_root)
    try:
        return comparable(index.refresh())
    finally:
        index.close()


def rebuilt_rows(store_root: Path, scratch: Path) -> list[dict]:
    """An index rebuilt from the run directories into a scratch file (the live one is left alone)."""
    from bttui.runs.index import Index

    scratch.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    index = Index(store_root)
    index.path = scratch
    try:
        return comparable(index.rebuild())
    finally:
        index.close()


def load_checkpoints(ckpt_dir: Path) -> dict[str, str | None]:
    """Every complete (non-temp) checkpoint file -> None when torch.load(weights_only=True) reads it, else the error."""
    import torch

    out: dict[str, str | None] = {}
    for path in sorted(ckpt_dir.glob("*.pt")):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            out[path.name] = None if isinstance(obj, dict) and "model" in obj else "no model state in it"
        except Exception as exc:  # noqa: BLE001 - the error text is the finding
            out[path.name] = f"{type(exc).__name__}: {exc}"
    return out


def newest_checkpoint(ckpt_dir: Path) -> str | None:
    files = [p for p in ckpt_dir.glob("*.pt") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime_ns).name if files else None


def split_segments(events: list[dict]) -> list[list[dict]]:
    """The event log cut at each `command` event: one segment per trainer process."""
    segments: list[list[dict]] = []
    for event in events:
        if event.get("type") == "command" or not segments:
            segments.append([])
        segments[-1].append(event)
    return segments


def json_dump(path: str | os.PathLike, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=1, default=str) + "\n")
