"""Resource telemetry for step events: GPU via NVML (nvidia-ml-py), torch CUDA memory, host RSS.

NVML is initialised lazily on first use; a missing driver or GPU (any NVMLError,
e.g. NVMLError_LibraryNotFound) means "n/a": the GPU fields are omitted, never a crash.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_MB = 1024 * 1024


class GpuTelemetry:
    """Samples utilisation, memory, temperature and power of the GPU behind a torch device."""

    def __init__(self, device: Any = None) -> None:
        self._device = device
        self._lock = threading.Lock()
        self._handle: Any = None
        self._failed = False

    def _nvml_handle(self) -> Any:
        if self._handle is not None or self._failed:
            return self._handle
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = self._find_handle(pynvml)
        except Exception:  # NVMLError_* or no pynvml at all: telemetry is n/a
            self._failed = True
            self._handle = None
        return self._handle

    def _find_handle(self, pynvml: Any) -> Any:
        # torch's index is relative to CUDA_VISIBLE_DEVICES, NVML's is physical: match by UUID.
        index = 0
        try:
            import torch

            dev = torch.device(self._device) if self._device is not None else torch.device("cuda")
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            if uuid:
                name = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
                return pynvml.nvmlDeviceGetHandleByUUID(name)
        except Exception:
            pass
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def nvml(self) -> dict[str, float]:
        """NVML fields (``gpu_util``, ``gpu_mem_used_mb``, ``gpu_mem_total_mb``, ``gpu_temp_c``, ``gpu_power_w``) or {}."""
        with self._lock:
            handle = self._nvml_handle()
            if handle is None:
                return {}
            out: dict[str, float] = {}
            try:
                import pynvml

                util = pynvml.nvmlDeviceGetUtilizationRates(handle)
                out["gpu_util"] = float(util.gpu)
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                out["gpu_mem_used_mb"] = round(mem.used / _MB, 1)
                out["gpu_mem_total_mb"] = round(mem.total / _MB, 1)
                out["gpu_temp_c"] = float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
                out["gpu_power_w"] = round(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 1)
            except Exception:
                pass  # some fields are unsupported on some boards; keep what was read
            return out

    def torch_memory(self) -> dict[str, float]:
        """This process's CUDA memory: allocated, reserved and peak allocated (MB); {} without CUDA."""
        try:
            import torch

            if not torch.cuda.is_available() or not torch.cuda.is_initialized():
                return {}
            dev = self._device if self._device is not None else torch.cuda.current_device()
            return {
                "gpu_mem_allocated_mb": round(torch.cuda.memory_allocated(dev) / _MB, 1),
                "gpu_mem_reserved_mb": round(torch.cuda.memory_reserved(dev) / _MB, 1),
                "gpu_mem_peak_mb": round(torch.cuda.max_memory_allocated(dev) / _MB, 1),
            }
        except Exception:
            return {}

    def sample(self) -> dict[str, float]:
        """All GPU fields available now (empty on a CPU-only machine)."""
        out = self.torch_memory()
        if out:
            out.update(self.nvml())
        return out


def host_rss_mb() -> float | None:
    """Resident set size of this process in MB (psutil, else /proc/self/statm)."""
    try:
        import psutil

        return round(psutil.Process(os.getpid()).memory_info().rss / _MB, 1)
    except Exception:
        pass
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / _MB, 1)
    except Exception:
        return None
