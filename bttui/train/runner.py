"""The trainer's top level: read a run directory, pretrain, fine-tune every cell, write the results back.

``python -m bttui.train RUN_DIR [--resume]``. Everything goes through the run
directory (docs/design.md): events.jsonl (config and command first), status.json
(heartbeat every few seconds), summary.json after pretraining and after each cell,
checkpoints/ and artifacts/. Exit code: 0 completed, 1 failed, 2 bad input (a BttuiError:
config, checkpoint), 128 + signal number
when stopped by SIGTERM/SIGINT (the run is then resumable with ``--resume``).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from bttui.errors import BttuiError
from bttui.faults import fault_point

HEARTBEAT_PERIOD_S = 2.0  # the heartbeat thread wakes this often ...
HEARTBEAT_MIN_INTERVAL_S = 5.0  # ... and stamps status.json when the last write is older than this
PROGRESS_MIN_INTERVAL_S = 1.0  # progress updates from the loops are coalesced to one write per second
ON_FINISH_TIMEOUT_S = 300


class Runner:
    """One trainer process working on one run directory."""

    def __init__(self, run_dir: str | os.PathLike, resume: bool = False) -> None:
        from bttui.runs.layout import RunPaths

        self.paths = RunPaths(Path(run_dir).resolve())
        self.resume = resume
        self.stop_signal: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._last_write = 0.0
        self._done = threading.Event()
        self.events: Any = None
        self.status: Any = None
        self.cfg: Any = None
        self.summary: dict[str, Any] = {"pretrain": None, "results": []}
        self.cell_status: dict[str, str] = {}
        self.dist: Any = None  # bttui.train.distributed.DistContext under torchrun (this is rank 0)
        self._events_broken = False

    # ------------------------------------------------------------------ plumbing
    def emit(self, type: str, **fields: Any) -> Any:
        if self.events is None:
            return None
        if self._events_broken:
            # A failed write may have left half a line; appending more would glue onto it and turn a
            # reportable unfinished last line into a bad line inside the log. status.json has the outcome.
            return None
        try:
            return self.events.write(type, **fields)
        except OSError as exc:
            self._events_broken = True
            if exc.filename is None:  # os.write names no file; the reason should
                raise OSError(exc.errno, exc.strerror, str(self.events.path)) from exc
            raise

    def _write_status(self, fields: dict[str, Any]) -> None:
        try:
            self.status.update(**fields)
        except OSError as exc:
            if exc.filename is None:  # the atomic write's os.write names no file; the failure reason should
                raise OSError(exc.errno, exc.strerror, str(self.paths.status)) from exc
            raise
        self._last_write = time.monotonic()

    def set_status(self, **fields: Any) -> None:
        """Write status.json now (merging any coalesced progress)."""
        with self._lock:
            merged = {**self._pending, **fields}
            self._pending = {}
            self._write_status(merged)

    def progress(self, **fields: Any) -> None:
        """Loop progress: coalesced to at most one status.json write per second."""
        with self._lock:
            self._pending.update(fields)
            if time.monotonic() - self._last_write < PROGRESS_MIN_INTERVAL_S:
                return
            merged, self._pending = self._pending, {}
            self._write_status(merged)

    def _heartbeat_loop(self) -> None:
        while not self._done.wait(HEARTBEAT_PERIOD_S):
            try:
                with self._lock:
                    if self._pending:
                        merged, self._pending = self._pending, {}
                        self._write_status(merged)
                    else:
                        self.status.heartbeat(min_interval=HEARTBEAT_MIN_INTERVAL_S)
            except Exception as exc:  # a full disk must not kill training; the next beat retries
                print(f"bttui.train: heartbeat failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only a flag: the loops checkpoint at the next step boundary and return.
        self.stop_signal = signum
        self._stop.set()

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        print(f"[{level}] {message}", file=sys.stderr, flush=True)
        self.emit("log", level=level, message=message, **fields)

    def write_summary(self) -> None:
        from bttui.runs.atomic import write_json_atomic

        fault_point("runner.summary.before")
        write_json_atomic(self.paths.summary, self.summary)
        fault_point("runner.summary.after")

    # ------------------------------------------------------------------ the run
    def run(self) -> int:
        """Run everything; never raises (failures end in status failed and exit code 1)."""
        from bttui.runs.events import EventWriter
        from bttui.runs.status import StatusFile

        try:
            self.paths.dir.mkdir(parents=True, exist_ok=True)
            self.events = EventWriter(self.paths.events)
            self.status = StatusFile(self.paths)
        except OSError as exc:
            # Nothing can record the failure in the run (read-only or full store, no permission): say so and stop.
            print(f"bttui.train: cannot write to the run directory {self.paths.dir}: {exc.strerror or exc}"
                  f"{f' ({exc.filename})' if exc.filename else ''}", file=sys.stderr, flush=True)
            return 1
        if self.resume:
            self._clean_stale_temps()
        previous_handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:
                pass  # not the main thread: no signal handling
        beat = threading.Thread(target=self._heartbeat_loop, name="bttui-heartbeat", daemon=True)
        final, reason, code = "failed", None, 1
        try:
            self._start()
            fault_point("runner.started")
            beat.start()
            final, reason = self._main()
            code = {"completed": 0, "failed": 1}.get(final, 128 + (self.stop_signal or signal.SIGTERM))
        except BaseException as exc:  # noqa: BLE001 - every failure must end in status.json
            reason = str(exc) if isinstance(exc, BttuiError) else (disk_reason(exc) or f"{type(exc).__name__}: {exc}")
            if isinstance(exc, KeyboardInterrupt):
                final, reason, code = "stopped", "interrupted", 128 + signal.SIGINT
            else:
                final, code = "failed", (exc.exit_code if isinstance(exc, BttuiError) else 1)
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            try:
                self.emit("log", level="error", message=reason, traceback=tb)
            except Exception:
                pass
        finally:
            self._done.set()
        fault_point("runner.final_status")
        try:
            self._final_status(status=final, reason=reason, ended=time.time(), stage=None)
        except Exception as exc:
            print(f"bttui.train: could not write the final status: {type(exc).__name__}: {exc}", file=sys.stderr)
        try:
            # status.json is the record; the matching event is a courtesy a full disk may refuse
            self.emit("status", status=final, reason=reason)
        except Exception as exc:
            print(f"bttui.train: could not log the final status event: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = code or 1
        self._on_finish(final)
        try:  # free this run's GPU/CPU slot and start queued runs (no daemon does it); never fails the run
            from bttui.runs.queue import after_run
            after_run(self.paths.dir)
        except Exception:
            pass
        if self.events is not None:
            self.events.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        return code

    def _final_status(self, **fields: Any) -> None:
        """Write the final status; on a full disk, where the atomic write cannot get a temp file, in place."""
        try:
            self.set_status(**fields)
        except OSError as exc:
            if exc.errno not in FULL_ERRNOS:
                raise
            with self._lock:
                self.status.data.update(self._pending)
                self._pending = {}
                self.status.data.update(fields, heartbeat=time.time())
                overwrite_in_place(self.paths.status, self.status.data)
            print(f"bttui.train: disk full; final status written in place of {self.paths.status}", file=sys.stderr)

    def _clean_stale_temps(self) -> None:
        """Before resuming: temp files that killed writes of this run (and of the store) left behind."""
        try:
            from bttui.runs.disk import apply, resume_temp_removals

            removals = resume_temp_removals(self.paths.dir)
            if removals:
                freed = apply(removals)
                print(f"bttui.train: removed {len(removals)} stale temp file(s) ({freed} bytes): "
                      f"{', '.join(r.path.name for r in removals)}", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - leftovers cost disk space, never the run
            print(f"bttui.train: stale temp cleanup failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _start(self) -> None:
        from bttui.config.load import config_to_dict, load_config
        from bttui.runs import liveness

        fresh = not self.resume or not self.paths.events.exists() or self.paths.events.stat().st_size == 0
        pid = os.getpid()
        self.set_status(status="running", reason=None, pid=pid, pid_start=liveness.process_start_time(pid),
                        host=liveness.hostname() if hasattr(liveness, "hostname") else socket.gethostname(),
                        boot_id=liveness.boot_id(), started=time.time(), ended=None, stage=None)
        self.cfg = load_config(self.paths.config_toml)
        if fresh:
            self.emit("config", config=config_to_dict(self.cfg))
        self.emit("command", argv=list(sys.argv), cwd=os.getcwd(), pid=pid, resume=self.resume)
        if self.resume and not fresh:
            self.log("resuming the run")

    def _main(self) -> tuple[str, str | None]:
        import torch

        from bttui.config.cells import expand_cells
        from bttui.runs.atomic import read_json

        cfg = self.cfg
        if cfg.resources.threads > 0:
            torch.set_num_threads(cfg.resources.threads)
        device = self._device()
        world = self.dist.world_size if self.dist is not None else 1
        self.set_status(device=device.type, gpus=gpu_ids(device.type, os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                         world, device.index))
        self.emit("log", level="info", message=f"device {device}; torch {torch.__version__}; "
                                               f"threads {torch.get_num_threads()}")
        self._synthesize_if_needed()
        if self.dist is not None:
            self.dist.barrier()  # the other ranks load the data only after it was synthesised

        cells = expand_cells(cfg)
        previous = read_json(self.paths.summary, default=None) if self.resume else None
        done: dict[str, dict] = {}
        if isinstance(previous, dict):
            done = {r["cell"]: r for r in previous.get("results", []) if isinstance(r, dict) and r.get("status") == "completed"}
        self.cell_status = {c.id: ("completed" if c.id in done else "pending") for c in cells}
        self.summary = {"pretrain": previous.get("pretrain") if isinstance(previous, dict) else None,
                        "results": [done[c.id] for c in cells if c.id in done]}
        self._replay_lost_cell_ends(done)
        self.set_status(cells_total=len(cells), cells_done=len(done), cells=dict(self.cell_status))

        # ---- pretraining
        if cfg.pretrain is not None:
            outcome = self._pretrain(device)
            if self.dist is not None:  # cells run on rank 0 alone: the other ranks exit after pretraining
                from bttui.train.distributed import teardown
                teardown(self.dist)
            if outcome is not None:
                return outcome
        elif self.dist is not None:
            from bttui.train.distributed import teardown
            teardown(self.dist)

        # ---- fine-tuning cells
        data_cache: dict[tuple[str, str | None], Any] = {}
        failures: list[str] = []
        todo = [c for c in cells if self.cell_status[c.id] != "completed"]
        if todo:
            self.emit("stage_start", stage="finetune", cells=len(todo), cells_total=len(cells))
        for cell in todo:
            if self.should_stop():
                return "stopped", self._stop_reason()
            outcome = self._cell(cell, device, data_cache)
            if outcome == "stopped":
                return "stopped", self._stop_reason()
            if outcome != "completed":
                failures.append(outcome)
        if todo:
            self.emit("stage_end", stage="finetune", failed=len(failures), completed=len(todo) - len(failures))
        if todo and len(failures) == len(todo) and not done:
            return "failed", f"every cell failed (first error: {failures[0]})"
        return "completed", None

    def _device(self) -> Any:
        import torch

        want = self.cfg.resources.device
        from bttui.train.distributed import env_world, setup
        if env_world()[0] > 1:  # launched by torchrun: join the process group, take GPU LOCAL_RANK
            self.dist, device = setup(want)
            return device
        if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise BttuiError("resources.device = \"cuda\" but torch sees no CUDA GPU on this machine "
                             f"(torch {torch.__version__}); use device = \"auto\" or \"cpu\".")
        return torch.device("cuda")

    def _needed_datasets(self) -> list[str]:
        cfg = self.cfg
        ids = list(cfg.pretrain.datasets) if cfg.pretrain is not None else []
        ids += list(cfg.finetune.datasets) if cfg.finetune is not None else []
        return list(dict.fromkeys(ids))

    def _synthesize_if_needed(self) -> None:
        cfg = self.cfg
        if not cfg.data.synthesize:
            return
        root = Path(cfg.data.root)
        missing = [d for d in self._needed_datasets() if not (root / d).exists()]
        if not missing:
            return
        from bttui.data.synth import synthesize

        self.log(f"synthesizing {', '.join(missing)} into {root} ({cfg.data.synth_per_class} per class, "
                 f"{cfg.data.image_size} px)")
        for ds in missing:
            try:
                synthesize(root, datasets=[ds], per_class=cfg.data.synth_per_class, image_size=cfg.data.image_size)
            except BttuiError:
                # Another run synthesised it concurrently (synthesize renames atomically and refuses to overwrite).
                if not (root / ds).exists():
                    raise

    def _stop_reason(self) -> str:
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal"
        return f"stopped by {name}; resume with --resume"

    def _cache_dir(self) -> Path:
        return self.paths.dir.parent / "cache"

    def _pretrain(self, device: Any) -> tuple[str, str | None] | None:
        from bttui.train.pretrain import FINAL_NAME, load_pretrain_data, run_pretraining

        cfg = self.cfg
        prev = self.summary.get("pretrain")
        if (self.resume and isinstance(prev, dict) and prev.get("status") == "completed"
                and (self.paths.checkpoints / FINAL_NAME).is_file()):
            self.log("pretraining already completed; skipping it")
            return None
        self.set_status(stage="pretrain", cell=None, epoch=0, epochs=cfg.pretrain.epochs, step=0)
        data = load_pretrain_data(cfg, cache_dir=self._cache_dir())
        import torch

        try:
            result = run_pretraining(cfg, data, self.paths.checkpoints, device=device, emit=self.emit,
                                     progress=self.progress, should_stop=self.should_stop, resume=self.resume,
                                     log=self.log, dist=self.dist)
        except torch.cuda.OutOfMemoryError:
            # A step's OOM is reported by run_pretraining itself; this is one outside the steps (health features).
            reason = self._oom_reason("pretrain.batch_size", cfg.pretrain.batch_size, device, " outside a training step")
        else:
            reason = None
        if reason is not None:
            from bttui.train.pretrain import release_cuda_memory

            release_cuda_memory()
            self.emit("stage_end", stage="pretrain", status="failed", reason=reason)
            return "failed", f"pretraining failed: {reason}"
        self.summary["pretrain"] = result.summary()
        self.write_summary()
        self.set_status(epoch=result.epochs, step=result.steps, loss=result.final_loss)
        if result.status == "failed":
            return "failed", f"pretraining failed: {result.reason}"
        if result.status == "stopped":
            return "stopped", self._stop_reason()
        return None

    def _oom_reason(self, key: str, batch: int, device: Any, where: str = "") -> str:
        import torch

        from bttui.train.pretrain import oom_reason, resolve_precision

        cfg = self.cfg
        amp = resolve_precision(cfg.pretrain.precision if cfg.pretrain is not None else "auto", torch.device(device))
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")
        return oom_reason(key, int(batch), name, int(cfg.data.image_size), where)

    def _resolve_run(self, ref: str) -> tuple[str, Path]:
        from bttui.runs.store import Store

        record = Store(self.paths.dir.parent).resolve(ref)
        return record.id, Path(record.paths.dir)

    def _cell(self, cell: Any, device: Any, data_cache: dict) -> str:
        """Run one cell; returns "completed", "stopped" or the error text."""
        from bttui.train.data import load_dataset
        from bttui.train.finetune import CellStopped, run_cell

        cfg = self.cfg
        self.cell_status[cell.id] = "running"
        self.set_status(stage="finetune", cell=cell.id, epoch=0, epochs=cfg.finetune.epochs, step=None, steps=None,
                        best_accuracy=None, cells=dict(self.cell_status))
        self.emit("cell_start", stage="finetune", cell=cell.id, dataset=cell.dataset, init=cell.init,
                  strategy=cell.strategy, label_fraction=cell.label_fraction, seed=cell.seed)
        try:
            key = (cell.dataset, cell.task)
            if key not in data_cache:
                data_cache[key] = load_dataset(cfg.data.root, cell.dataset, task=cell.task,
                                               image_size=cfg.data.image_size, split_policy=cfg.data.split_policy,
                                               grayscale=cfg.data.grayscale, cache_dir=self._cache_dir())
            result = run_cell(cfg, cell, data_cache[key], device=device, run_dir=self.paths.dir, emit=self.emit,
                              progress=self.progress, should_stop=self.should_stop, resolve_run=self._resolve_run)
        except CellStopped:
            self.cell_status[cell.id] = "pending"  # rerun from scratch on resume
            self.set_status(cells=dict(self.cell_status))
            self.emit("log", level="info", cell=cell.id, message=f"cell {cell.id} interrupted; it reruns on resume")
            return "stopped"
        except Exception as exc:  # one failed cell never stops the others
            if _is_cuda_oom(exc):
                error = self._oom_reason("finetune.batch_size", cfg.finetune.batch_size, device,
                                         f" in cell {cell.id}")
            else:
                error = str(exc) if isinstance(exc, BttuiError) else f"{type(exc).__name__}: {exc}"
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            self.emit("log", level="error", cell=cell.id, message=f"cell {cell.id} failed: {error}", traceback=tb)
            result = failed_result(cell, error)
        if result["status"] == "failed" and _is_oom_text(result.get("error")):
            from bttui.train.pretrain import release_cuda_memory

            release_cuda_memory()  # outside the except block: the cell's tensors are no longer pinned by it
        self._record(cell, result)
        return "completed" if result["status"] == "completed" else result["error"]

    def _replay_lost_cell_ends(self, done: dict[str, dict]) -> None:
        """Emit the `cell_end` of completed cells whose event a crash lost.

        _record writes summary.json first and the event second, so a cell is never run twice
        (the summary is what resume trusts); a kill between the two leaves a completed cell without
        its event, which is written here, once: a replayed event counts as the cell's event next time.
        """
        if not done:
            return
        logged = completed_cell_ends(self.paths.events)
        for cell_id, result in done.items():
            if cell_id not in logged:
                self.emit("cell_end", stage="finetune", cell=cell_id, result=result, replayed=True)

    def _record(self, cell: Any, result: dict) -> None:
        order = {c: i for i, c in enumerate(self.cell_status)}
        results = [r for r in self.summary["results"] if r.get("cell") != cell.id] + [result]
        results.sort(key=lambda r: order.get(r.get("cell"), len(order)))
        self.summary["results"] = results
        self.write_summary()
        self.cell_status[cell.id] = result["status"]
        self.emit("cell_end", stage="finetune", cell=cell.id, result=result)
        done = sum(1 for s in self.cell_status.values() if s in ("completed", "failed"))
        # best_accuracy: the best test accuracy of the completed cells (what `ls` and the TUI show)
        tests = [r["test_accuracy"] for r in results
                 if r.get("status") == "completed" and isinstance(r.get("test_accuracy"), (int, float))]
        self.set_status(cells=dict(self.cell_status), cells_done=done, best_accuracy=max(tests) if tests else None,
                        last_test_accuracy=result.get("test_accuracy"))
        fault_point("runner.cell.recorded")

    def _on_finish(self, final: str) -> None:
        command = getattr(self.cfg, "on_finish", None) if self.cfg is not None else None
        if not command:  # the machine's default hook (e.g. a notification) when the config has none
            try:
                from bttui.config.settings import load_settings
                command = load_settings().on_finish
            except Exception as exc:  # a broken settings file must not turn a finished run into a crash
                print(f"bttui.train: machine settings unreadable, no on_finish: {exc}", file=sys.stderr)
        if not command:
            return
        env = {**os.environ, "BTTUI_RUN_ID": self.paths.dir.name, "BTTUI_STATUS": final,
               "BTTUI_RUN_DIR": str(self.paths.dir)}
        try:
            proc = subprocess.run(command, shell=True, env=env, timeout=ON_FINISH_TIMEOUT_S, check=False)
            if proc.returncode != 0:
                print(f"bttui.train: on_finish exited with {proc.returncode}", file=sys.stderr)
        except Exception as exc:
            print(f"bttui.train: on_finish failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def gpu_ids(device_type: str, visible: str | None, world: int = 1, index: int | None = None) -> list[str]:
    """The machine's GPUs this run trains on, as status.json's `gpus` records them (the runs table's GPU column).

    Physical ids, not torch's renumbered ones: the first `world` entries of CUDA_VISIBLE_DEVICES
    (indices, or UUIDs/MIG ids as given) when set, else torch's indices (one per torchrun rank, or
    the single process's device). Empty on the CPU.
    """
    if device_type != "cuda":
        return []
    count = max(1, world)
    if visible is not None and visible.strip():
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if world > 1:
            return ids[:count]
        return ids[index or 0:(index or 0) + 1]
    if world > 1:
        return [str(i) for i in range(count)]
    return [str(index or 0)]


def _is_cuda_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _is_oom_text(error: Any) -> bool:
    return isinstance(error, str) and error.startswith("CUDA out of memory")


FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def disk_reason(exc: BaseException) -> str | None:
    """A one-line, actionable reason for a write the disk refused (full, quota, read-only); None for other errors."""
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    where = f" while writing {exc.filename}" if exc.filename else ""
    if exc.errno in FULL_ERRNOS:
        what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return (f"{what}{where}: free space (`bttui gc` drops old checkpoints of finished runs) or move the store "
                f"(--store, $BTTUI_STORE), then resume the run")
    if exc.errno == errno.EROFS:
        return f"the run store became read-only{where}: remount it read-write, then resume the run"
    return None


def overwrite_in_place(path: Path, data: dict) -> None:
    """Rewrite a small JSON file through its own blocks (no temp file, no truncation): the last resort on a full
    disk. Not atomic: a reader may see a mix for an instant (read_json then falls back to its default)."""
    from bttui.runs.atomic import dumps

    payload = dumps(data).encode("utf-8") + b"\n"
    fd = os.open(path, os.O_WRONLY)
    try:
        size = os.fstat(fd).st_size
        if len(payload) < size:  # pad with JSON whitespace instead of truncating, so the old tail cannot remain
            payload += b" " * (size - len(payload))
        view = memoryview(payload)
        offset = 0
        while offset < len(payload):
            offset += os.pwrite(fd, view[offset:], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def completed_cell_ends(events_path: Path) -> set[str]:
    """Cell ids whose last `cell_end` event in the log reports a completed result (torn lines skipped)."""
    last: dict[str, Any] = {}
    try:
        with open(events_path, "rb") as fh:
            for line in fh:
                if b"cell_end" not in line:  # cheap filter: the log is mostly step events
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("type") == "cell_end" and isinstance(event.get("cell"), str):
                    last[event["cell"]] = event.get("result")
    except FileNotFoundError:
        return set()
    return {cell for cell, result in last.items() if isinstance(result, dict) and result.get("status") == "completed"}


def failed_result(cell: Any, error: str) -> dict[str, Any]:
    """The result item of a cell that raised."""
    return {"cell": cell.id, "dataset": cell.dataset, "task": cell.task, "init": cell.init, "strategy": cell.strategy,
            "label_fraction": cell.label_fraction, "n_train": None, "seed": cell.seed, "status": "failed",
            "test_accuracy": None, "per_class_accuracy": None, "confusion_matrix": None, "class_names": None,
            "lineage": {"backbone_from": None}, "best_epoch": None, "val_accuracy": None, "balanced_accuracy": None,
            "macro_f1": None, "test_accuracy_ci": None, "probe": None, "error": error}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bttui.train RUN_DIR [--resume]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bttui.train",
                                     description="Run the training described by a bttui run directory.")
    parser.add_argument("run_dir", help="run directory holding config.toml")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint and skip completed cells")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.toml").is_file():
        print(f"bttui.train: {run_dir} is not a run directory (no config.toml in it)", file=sys.stderr)
        return 2
    from bttui.train.distributed import env_world, run_worker
    if env_world()[1] != 0:  # torchrun rank > 0: train in lockstep with rank 0, write nothing
        return run_worker(run_dir, resume=args.resume)
    return Runner(run_dir, resume=args.resume).run()
