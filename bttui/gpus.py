"""GPU sampling through NVML (nvidia-ml-py), lazily initialised; no GPU or driver gives an empty list."""

from __future__ import annotations

import os

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

GIB = 1024**3


@dataclass(frozen=True)
class GpuSample:
    """One device at one moment. Memory in bytes, utilization in percent (None if unknown)."""

    index: int
    name: str
    memory_used: int
    memory_total: int
    utilization: int | None
    processes: tuple[tuple[int, int | None], ...] = field(default_factory=tuple)

    @property
    def memory_fraction(self) -> float:
        return self.memory_used / self.memory_total if self.memory_total else 0.0

    @property
    def idle(self) -> bool:
        """No compute process and (when known) under 5 % utilisation."""
        return not self.processes and (self.utilization is None or self.utilization < 5)


class GpuSamplerProtocol(Protocol):
    available: bool

    def sample(self) -> list[GpuSample]: ...


def _decode(value: Any) -> str:
    # Older NVML bindings return bytes for names, newer ones str.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def driver_present() -> bool:
    """Whether an NVIDIA kernel driver is loaded; without one NVML cannot work and is not loaded at all."""
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl"))


class NvmlGpuSampler:
    """Samples every visible device through NVML.

    NVML is initialised on the first ``sample()`` call, once; any ``NVMLError``
    (library not found, driver not loaded, no permission) makes ``available``
    False and every later call returns ``[]`` without retrying, so a machine
    without a GPU never pays more than one failed ``nvmlInit``.
    """

    def __init__(self) -> None:
        self.available = False
        self.error: str | None = None
        self._initialised = False
        self._nvml: Any = None
        self._lock = threading.Lock()

    def _init(self) -> None:
        self._initialised = True
        if not driver_present():
            # No NVIDIA driver on this machine: skip loading NVML (~65 ms per CLI launch).
            self.error = "no NVIDIA driver found (/proc/driver/nvidia/version is missing)"
            return
        try:
            import pynvml  # nvidia-ml-py; imported here so importing bttui stays cheap

            pynvml.nvmlInit()
        except ImportError as exc:
            self.error = f"nvidia-ml-py not installed ({exc})"
            return
        except Exception as exc:  # pynvml.NVMLError and subclasses (LibraryNotFound, DriverNotLoaded)
            self.error = str(exc) or type(exc).__name__
            return
        self._nvml = pynvml
        self.available = True

    def sample(self) -> list[GpuSample]:
        with self._lock:
            if not self._initialised:
                self._init()
            if not self.available:
                return []
            nv = self._nvml
            try:
                count = nv.nvmlDeviceGetCount()
            except Exception as exc:
                self.error = str(exc) or type(exc).__name__
                return []
            samples = []
            for i in range(count):
                try:
                    samples.append(self._sample_one(nv, i))
                except Exception as exc:  # one broken device (fell off the bus) must not hide the others
                    self.error = str(exc) or type(exc).__name__
            return samples

    @staticmethod
    def _sample_one(nv: Any, index: int) -> GpuSample:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        name = _decode(nv.nvmlDeviceGetName(handle))
        mem = nv.nvmlDeviceGetMemoryInfo(handle)
        try:
            util: int | None = int(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # not supported on some devices (MIG slices)
            util = None
        try:
            procs = tuple(
                (int(p.pid), int(p.usedGpuMemory) if p.usedGpuMemory is not None else None)
                for p in nv.nvmlDeviceGetComputeRunningProcesses(handle)
            )
        except Exception:
            procs = ()
        return GpuSample(index, name, int(mem.used), int(mem.total), util, procs)

    def shutdown(self) -> None:
        with self._lock:
            if self.available and self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    pass
            self.available = False
            self._initialised = False


class FakeGpuSampler:
    """Returns fixed samples (tests, demos); ``FakeGpuSampler()`` behaves like a machine without NVML."""

    def __init__(self, samples: Sequence[GpuSample] | None = None) -> None:
        self.samples = list(samples or [])
        self.available = samples is not None
        self.calls = 0

    def sample(self) -> list[GpuSample]:
        self.calls += 1
        return list(self.samples)


def format_gib(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "?"
    value = n_bytes / GIB
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def gpu_summary(samples: Sequence[GpuSample], available: bool) -> str:
    """One line for headers: ``GPUs: 0 38/80 GiB 97%  1 idle`` or ``GPUs: n/a``."""
    if not available:
        return "GPUs: n/a"
    if not samples:
        return "GPUs: none"
    parts = []
    for s in samples:
        if s.idle and s.memory_fraction < 0.05:
            parts.append(f"{s.index} idle")
        else:
            util = f" {s.utilization}%" if s.utilization is not None else ""
            parts.append(f"{s.index} {format_gib(s.memory_used)}/{format_gib(s.memory_total)} GiB{util}")
    return "GPUs: " + "  ".join(parts)


_default: NvmlGpuSampler | None = None


def default_sampler() -> NvmlGpuSampler:
    """The process-wide NVML sampler (one nvmlInit per process)."""
    global _default
    if _default is None:
        _default = NvmlGpuSampler()
    return _default
