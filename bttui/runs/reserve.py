"""Machine-wide GPU and CPU slot reservations: one file per slot in a shared folder, taken before a trainer starts.

Every bttui process on the machine (CLIs, TUIs, finishing trainers, whatever
their store) claims slots in the same folder (machine settings
`reservations_dir`, default /tmp/bttui-gpu-reservations), so two launches never
pick the same GPU. A slot is a file `gpu<index>.<k>` (k < max_runs_per_gpu) or
`cpu.<k>` (k < max_cpu_runs), created with O_CREAT|O_EXCL and holding the run
id, run folder, pid and pid start time of its holder. Claims are made under an
flock on `<dir>/.lock` (released by the kernel if the claimer dies), so the scan
"which slots are free" and the creation are one step.

A reservation is stale, and reclaimed by the next claim, when its holder pid is
gone (or reused), its run folder is gone, its run has written a final status, or
its run is still queued without a trainer pid 10 s after the claim (the launch
that the claim was for never happened).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from bttui.errors import BttuiError
from bttui.runs import liveness
from bttui.runs.atomic import read_json, write_json_atomic

DEFAULT_DIR = "/tmp/bttui-gpu-reservations"
# A slot file still empty this long after creation belongs to a claimer that died between
# O_EXCL and the write (the write itself takes microseconds).
EMPTY_GRACE_S = 10.0
# GPUs already used by processes bttui does not know about (other users, other tools) count as
# taken slots; on top of that a GPU needs this share of its memory free to be picked at all.
MIN_FREE_FRACTION = 0.1
UNLAUNCHED_GRACE_S = 10.0
_FINAL = ("completed", "failed", "stopped")


@dataclass(frozen=True)
class Request:
    """What a run asks for: `cpu` (one CPU slot) or `gpus` GPUs (`indices` fixed, or None for most free memory)."""

    cpu: bool
    count: int = 1
    indices: tuple[int, ...] | None = None

    def describe(self) -> str:
        if self.cpu:
            return "a CPU slot"
        if self.indices is not None:
            return "GPU" + ("s " if len(self.indices) > 1 else " ") + ", ".join(map(str, self.indices))
        return f"{self.count} GPU{'s' if self.count != 1 else ''}"


def request_for(resources: dict | None, samples: Sequence[Any], *, run: str = "the run") -> Request:
    """The Request of a config's `[resources]` table (a dict) on a machine whose GPUs are `samples`."""
    res = resources if isinstance(resources, dict) else {}
    device = res.get("device", "auto")
    devices = res.get("devices", 1)
    devices = devices if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1 else 1
    gpus = res.get("gpus", "auto")
    if device == "cpu":
        return Request(cpu=True)
    if not samples:
        if device == "cuda" or isinstance(gpus, list):
            raise BttuiError(
                f"{run} asks for GPUs (resources.device = {device!r}, resources.gpus = {gpus!r}) but NVML sees no "
                f"GPU on this machine; set resources.device = \"auto\" or \"cpu\" to train on the CPU.")
        return Request(cpu=True)
    known = {s.index for s in samples}
    if isinstance(gpus, list):
        indices = tuple(int(g) for g in gpus)
        missing = [g for g in indices if g not in known]
        if missing:
            raise BttuiError(
                f"resources.gpus of {run} names GPU {', '.join(map(str, missing))}, but this machine has GPUs "
                f"{', '.join(map(str, sorted(known)))}; use gpus = \"auto\" or existing indices.")
        return Request(cpu=False, count=len(indices), indices=indices)
    if devices > len(known):
        raise BttuiError(f"{run} asks for resources.devices = {devices} GPUs but this machine has {len(known)}.")
    return Request(cpu=False, count=devices)


@dataclass
class Claim:
    """Slots held for one run; `gpus` is empty for a CPU slot."""

    run_id: str
    gpus: list[int]
    files: list[Path] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Environment for the trainer: CUDA_VISIBLE_DEVICES naming the reserved GPUs (nothing for CPU runs)."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, self.gpus))} if self.gpus else {}

    def set_pid(self, pid: int) -> None:
        """Hand the slots to the started trainer: they now live exactly as long as that process."""
        start = liveness.process_start_time(pid)
        for path in self.files:
            data = read_json(path, default=None)
            if isinstance(data, dict) and data.get("run_id") == self.run_id:
                data.update(pid=pid, pid_start=start)
                write_json_atomic(path, data)

    def release(self) -> None:
        for path in self.files:
            data = read_json(path, default=None)
            if isinstance(data, dict) and data.get("run_id") == self.run_id:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass


def _gpu_prefix(index: int) -> str:
    return f"gpu{index}."


class Reservations:
    """The reservation folder of this machine."""

    def __init__(self, directory: str | os.PathLike | None = None, *, max_runs_per_gpu: int = 1,
                 max_cpu_runs: int = 1) -> None:
        self.dir = Path(directory or DEFAULT_DIR)
        self.max_runs_per_gpu = max(1, int(max_runs_per_gpu))
        self.max_cpu_runs = max(1, int(max_cpu_runs))

    @classmethod
    def from_settings(cls, settings: Any = None) -> "Reservations":
        if settings is None:
            from bttui.config.settings import load_settings

            settings = load_settings()
        return cls(settings.reservations_dir or DEFAULT_DIR, max_runs_per_gpu=settings.max_runs_per_gpu,
                   max_cpu_runs=settings.max_cpu_runs)

    # ------------------------------------------------------------ locking

    def _ensure_dir(self) -> None:
        if self.dir.is_dir():
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Shared by every user of the machine: world-writable with the sticky bit, like /tmp.
            os.chmod(self.dir, 0o1777)
        except PermissionError:
            pass
        except OSError as err:
            raise BttuiError(f"Cannot create the GPU reservation folder {self.dir} ({err.strerror}); set "
                             f"reservations_dir in the machine settings to a writable folder.") from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's flock (machine-wide, dropped by the kernel if this process dies)."""
        self._ensure_dir()
        try:
            fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise BttuiError(f"Cannot open {self.dir / '.lock'} ({err.strerror}); set reservations_dir in the "
                             f"machine settings to a folder every bttui user can write.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    # ------------------------------------------------------------ reading

    def _read(self, path: Path) -> dict | None:
        try:
            text = path.read_text()
        except OSError:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return {} if not text.strip() else None
        return data if isinstance(data, dict) else None

    def is_stale(self, path: Path, data: dict | None = None, *, now: float | None = None) -> bool:
        """True if the slot file `path` no longer holds anything alive (see the module docstring)."""
        data = self._read(path) if data is None else data
        if data is None or not data:
            try:
                age = (now or time.time()) - path.stat().st_mtime
            except FileNotFoundError:
                return True
            return age > EMPTY_GRACE_S
        pid, start = data.get("pid"), data.get("pid_start")
        if not liveness.pid_alive(pid, start if isinstance(start, int) else None):
            return True
        run_dir = data.get("run_dir")
        if run_dir:
            if not Path(run_dir).is_dir():
                return True
            status = read_json(Path(run_dir) / "status.json", default=None)
            if isinstance(status, dict):
                if status.get("status") in _FINAL:
                    return True
                created = data.get("created")
                # Launches record the trainer's pid in status.json milliseconds after the claim; a slot
                # whose run still shows no pid long after was claimed for a launch that never happened.
                if (status.get("status") == "queued" and not status.get("pid") and isinstance(created, (int, float))
                        and (now or time.time()) - created > UNLAUNCHED_GRACE_S):
                    return True
        return False

    def held(self) -> list[dict]:
        """Live reservations: dicts with `slot` plus the file's fields."""
        out = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith("."):
                continue
            path = self.dir / name
            data = self._read(path)
            if not self.is_stale(path, data):
                out.append({"slot": name, **(data or {})})
        return out

    # ------------------------------------------------------------ claiming

    def _take(self, name: str, run_id: str, run_dir: str) -> Path | None:
        """Create slot file `name` for the run (reclaiming it if stale); None if it is held. Caller holds the lock."""
        path = self.dir / name
        if path.exists():
            if not self.is_stale(path):
                return None
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        pid = os.getpid()
        record = {"run_id": run_id, "run_dir": run_dir, "pid": pid, "pid_start": liveness.process_start_time(pid),
                  "host": liveness.hostname(), "created": time.time()}
        try:
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def _free_slot(self, prefix: str, limit: int, run_id: str, run_dir: str) -> Path | None:
        for k in range(limit):
            taken = self._take(f"{prefix}{k}", run_id, run_dir)
            if taken is not None:
                return taken
        return None

    def _live_count(self, prefix: str) -> int:
        count = 0
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return 0
        for name in names:
            if name.startswith(prefix) and name[len(prefix):].isdigit() and not self.is_stale(self.dir / name):
                count += 1
        return count

    def _reserved_pids(self) -> set[int]:
        return {d["pid"] for d in self.held() if isinstance(d.get("pid"), int)}

    def _foreign(self, sample: Any, ours: set[int]) -> int:
        """Compute processes on the GPU that are neither a reserved trainer nor its child (other users, tools)."""
        n = 0
        for pid, _mem in getattr(sample, "processes", ()) or ():
            if not _descends_from(pid, ours):
                n += 1
        return n

    def claim(self, run_id: str, run_dir: str | os.PathLike, request: Request, samples: Sequence[Any]) -> Claim | None:
        """Reserve what `request` asks for, or nothing (None) when it does not fit now."""
        run_dir = str(run_dir)
        with self.locked():
            if request.cpu:
                slot = self._free_slot("cpu.", self.max_cpu_runs, run_id, run_dir)
                return Claim(run_id, [], [slot]) if slot is not None else None
            ours = self._reserved_pids()
            by_index = {s.index: s for s in samples}
            candidates = []
            for s in samples:
                used = self._live_count(_gpu_prefix(s.index)) + self._foreign(s, ours)
                free_mem = max(0, s.memory_total - s.memory_used)
                if used >= self.max_runs_per_gpu:
                    continue
                if s.memory_total and free_mem < MIN_FREE_FRACTION * s.memory_total:
                    continue
                candidates.append((-free_mem, s.index))
            candidates.sort()
            if request.indices is not None:
                ok = {i for _, i in candidates}
                if not all(i in ok for i in request.indices):
                    return None
                order = list(request.indices)
            else:
                order = [i for _, i in candidates]
                if len(order) < request.count:
                    return None
            claim = Claim(run_id, [])
            for index in order:
                if len(claim.gpus) == request.count:
                    break
                slot = self._free_slot(_gpu_prefix(index), self.max_runs_per_gpu, run_id, run_dir)
                if slot is None:
                    continue
                claim.gpus.append(index)
                claim.files.append(slot)
            if len(claim.gpus) < request.count or (request.indices is not None and
                                                   sorted(claim.gpus) != sorted(request.indices)):
                claim.release()
                return None
            if request.indices is None:
                claim.gpus.sort(key=lambda i: -(by_index[i].memory_total - by_index[i].memory_used))
            return claim

    def release_run(self, run_id: str) -> int:
        """Delete every slot file held for `run_id`; returns how many."""
        n = 0
        with self.locked():
            for name in os.listdir(self.dir):
                if name.startswith("."):
                    continue
                data = self._read(self.dir / name)
                if isinstance(data, dict) and data.get("run_id") == run_id:
                    try:
                        (self.dir / name).unlink()
                        n += 1
                    except FileNotFoundError:
                        pass
        return n


def _parent_pid(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def _descends_from(pid: int, ancestors: set[int], depth: int = 4) -> bool:
    # torchrun workers are children of the reserved torchrun process; 4 levels covers wrappers.
    current: int | None = pid
    for _ in range(depth + 1):
        if current is None or current <= 1:
            return False
        if current in ancestors:
            return True
        current = _parent_pid(current)
    return False
