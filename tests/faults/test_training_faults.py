"""Training faults end in `failed` with a reason a user can act on: NaN/Inf loss, collapse, CUDA OOM, vanished data.

Real trainer processes on tiny synthetic data. The NaN and Inf come from a
learning rate of 1e9 (Adam gives NaN, SGD Inf); collapse from a health
threshold no embedding meets; the CUDA OOM is raised inside a pretraining step
by BTTUI_FAULT=...:oom (no GPU needed); the data file is deleted while the
trainer is held stopped (BTTUI_FAULT=...:stop) between pretraining and the cells.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import faultkit


def _wait_stopped(pid: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("T", "t"):
            return True
        time.sleep(0.05)
    return False


def _run(work: Path, toml: str, fault: str = "", on_stop=None) -> dict:
    from bttui.runs.launch import launch
    from bttui.runs.store import Store

    env = faultkit.base_env(work)
    store = work / "store"
    paths = faultkit.create_run(store, toml, work / "cfg")
    out: dict = {}
    if on_stop is None:
        out["rc"] = faultkit.run_trainer(paths, {**env, "BTTUI_FAULT": fault})
    else:
        proc = launch(paths, detach=False, env={**env, "BTTUI_FAULT": fault})
        try:
            out["was_stopped"] = _wait_stopped(proc.pid)
            on_stop()
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            out["rc"] = proc.wait(timeout=180)
    record = Store(store).get(paths.dir.name)
    out.update(status=record.status, reason=record.reason, log=paths.log.read_text(errors="replace")[-3000:])
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
    return out


def _scenarios(root: Path, base: Path) -> dict:
    def vanish_setup() -> tuple[str, callable]:
        private = base / "vanish-data"
        shutil.copytree(root, private)
        victim = private / faultkit.OTHER_DATASET / "images.hdf5"
        toml = faultkit.tiny_toml(private, epochs=1, finetune_dataset=faultkit.OTHER_DATASET)
        return toml, lambda: victim.unlink()

    vanish_toml, vanish = vanish_setup()
    return {
        "nan": dict(toml=faultkit.tiny_toml(root, finetune=False, pretrain_extra='lr = 1e9\nschedule = "constant"')),
        "inf": dict(toml=faultkit.tiny_toml(root, finetune=False,
                                            pretrain_extra='lr = 1e9\nschedule = "constant"\noptimizer = "sgd"')),
        "lars_blowup": dict(toml=faultkit.tiny_toml(root, finetune=False,
                                                    pretrain_extra='lr = 1e9\nschedule = "constant"\noptimizer = "lars"')),
        "collapse": dict(toml=faultkit.tiny_toml(root, finetune=False, extra="",
                                                 pretrain_extra="") + '\n[health]\non_collapse = "stop"\nmin_std = 0.99\n'),
        "oom": dict(toml=faultkit.tiny_toml(root, finetune=False), fault="pretrain.step.after_backward@2:oom"),
        "vanished_data": dict(toml=vanish_toml, fault="runner.summary.before@1:stop", on_stop=vanish),
    }


@pytest.fixture(scope="module")
def outcomes(mimeta_root, tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("trainfaults")
    scenarios = _scenarios(mimeta_root, base)

    def one(item):
        name, spec = item
        try:
            return name, _run(base / name, **spec)
        except Exception:  # noqa: BLE001 - reported by the scenario's test
            return name, {"error": traceback.format_exc()}

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, scenarios.items()))


def _failed(outcomes: dict, name: str) -> str:
    out = outcomes[name]
    assert "error" not in out, out.get("error")
    assert out["rc"] == 1 and out["status"] == "failed", out
    assert out["reason"], out
    assert "Traceback" not in out["reason"] and "\n" not in out["reason"], out["reason"]
    return out["reason"]


def test_nan_loss_fails_with_lr_advice(outcomes):
    reason = _failed(outcomes, "nan")
    assert reason.startswith("pretraining failed: loss became NaN at step"), reason
    assert "try a lower lr (currently 1e+09)" in reason


def test_inf_loss_fails_with_lr_advice(outcomes):
    reason = _failed(outcomes, "inf")
    assert "loss became Inf at step" in reason and "lower lr" in reason, reason


def test_non_finite_features_fail_with_lr_advice(outcomes):
    reason = _failed(outcomes, "lars_blowup")
    assert "lower lr" in reason or "non-finite" in reason.lower(), reason
    assert "LinAlgError" not in reason


def test_collapse_stops_the_run(outcomes):
    reason = _failed(outcomes, "collapse")
    assert "representation collapse suspected at epoch 1" in reason, reason
    assert "health.min_std 0.99" in reason and "(health.on_collapse = stop)" in reason


def test_cuda_oom_fails_the_run(outcomes):
    reason = _failed(outcomes, "oom")
    assert "out of memory" in reason.lower(), reason


def test_cuda_oom_reason_names_the_batch_size_and_a_smaller_one(outcomes):
    reason = _failed(outcomes, "oom")
    assert "pretrain.batch_size" in reason and "8" in reason and "4" in reason, reason


def test_data_file_vanishing_mid_run_fails_the_cells_clearly(outcomes):
    out = outcomes["vanished_data"]
    assert out.get("was_stopped"), out
    reason = _failed(outcomes, "vanished_data")
    assert "images.hdf5" in reason and faultkit.OTHER_DATASET in reason, reason
    assert "missing" in reason.lower(), reason
