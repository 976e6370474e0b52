"""Tests for bttui.gpus: NVML sampling with a fake pynvml, graceful n/a without a driver."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest

from bttui import gpus
from bttui.gpus import GIB, FakeGpuSampler, GpuSample, NvmlGpuSampler, gpu_summary


class FakeNVMLError(Exception):
    pass


def make_fake_pynvml(*, init_error: Exception | None = None, util_error: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError
    mod.init_calls = 0
    devices = [
        dict(name=b"NVIDIA H100 80GB HBM3", used=38 * GIB, total=80 * GIB, util=97,
             procs=[SimpleNamespace(pid=1234, usedGpuMemory=9 * GIB)]),
        dict(name="NVIDIA H100 80GB HBM3", used=GIB // 2, total=80 * GIB, util=0, procs=[]),
    ]

    def nvmlInit():
        mod.init_calls += 1
        if init_error is not None:
            raise init_error

    def get_util(h):
        if util_error:
            raise FakeNVMLError("Not Supported")
        return SimpleNamespace(gpu=devices[h]["util"], memory=0)

    mod.nvmlInit = nvmlInit
    mod.nvmlShutdown = lambda: None
    mod.nvmlDeviceGetCount = lambda: len(devices)
    mod.nvmlDeviceGetHandleByIndex = lambda i: i
    mod.nvmlDeviceGetName = lambda h: devices[h]["name"]
    mod.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=devices[h]["used"], total=devices[h]["total"])
    mod.nvmlDeviceGetUtilizationRates = get_util
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: devices[h]["procs"]
    return mod



@pytest.fixture(autouse=True)
def _driver_present(monkeypatch, request):
    """The fake pynvml modules stand in for a machine with a driver, unless a test says otherwise."""
    if "no_driver" not in request.keywords:
        monkeypatch.setattr(gpus, "driver_present", lambda: True)


@pytest.mark.no_driver
def test_no_driver_skips_nvml_entirely(monkeypatch):
    monkeypatch.setattr(gpus, "driver_present", lambda: False)
    sampler = gpus.NvmlGpuSampler()
    assert sampler.sample() == []
    assert sampler.available is False and "no NVIDIA driver" in sampler.error

def test_samples_through_fake_nvml(monkeypatch):
    fake = make_fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = NvmlGpuSampler()
    first = sampler.sample()
    second = sampler.sample()
    assert sampler.available is True
    assert fake.init_calls == 1  # initialised once, lazily
    assert first == second
    assert [s.index for s in first] == [0, 1]
    assert first[0].name == "NVIDIA H100 80GB HBM3"  # bytes decoded
    assert first[0].memory_used == 38 * GIB and first[0].memory_total == 80 * GIB
    assert first[0].utilization == 97
    assert first[0].processes == ((1234, 9 * GIB),)
    assert first[1].idle and not first[0].idle
    assert gpu_summary(first, True) == "GPUs: 0 38/80 GiB 97%  1 idle"


def test_init_error_means_unavailable_and_no_retry(monkeypatch):
    fake = make_fake_pynvml(init_error=FakeNVMLError("NVML Shared Library Not Found"))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = NvmlGpuSampler()
    assert sampler.sample() == []
    assert sampler.sample() == []
    assert sampler.available is False
    assert fake.init_calls == 1
    assert "Not Found" in sampler.error
    assert gpu_summary([], sampler.available) == "GPUs: n/a"


def test_unsupported_utilization_is_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(util_error=True))
    samples = NvmlGpuSampler().sample()
    assert [s.utilization for s in samples] == [None, None]
    assert gpu_summary(samples[:1], True) == "GPUs: 0 38/80 GiB"


def test_missing_pynvml_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    sampler = NvmlGpuSampler()
    assert sampler.sample() == []
    assert sampler.available is False
    assert "not installed" in sampler.error


def test_real_nvml_never_crashes():
    # On this CPU machine NVML is absent (NVMLError_LibraryNotFound); on a GPU box it returns devices.
    sampler = NvmlGpuSampler()
    samples = sampler.sample()
    assert isinstance(samples, list)
    if not sampler.available:
        assert samples == []
    else:
        assert all(s.memory_total > 0 for s in samples)
    sampler.shutdown()


@pytest.mark.parametrize("available", [True, False])
def test_fake_sampler(available):
    samples = [GpuSample(0, "Fake", GIB, 16 * GIB, 50, ())]
    fake = FakeGpuSampler(samples if available else None)
    assert fake.available is available
    assert fake.sample() == (samples if available else [])
    assert fake.calls == 1
    assert gpu_summary(fake.sample(), fake.available) == ("GPUs: 0 1.0/16 GiB 50%" if available else "GPUs: n/a")
