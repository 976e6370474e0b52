"""Cost of telemetry: one step event (EventWriter.write + RSS + GPU sampling) vs one CPU training step.

The trainer writes a step event every ``log_every`` steps (default 10); the target is under 1%
of the step time even if it wrote one every step. CPU step: ResNet-18, 3x2048 projector,
32 px, batch 16 (the issue's reference point).

    python bench/bench_events.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BttuiStep, machine, timed  # noqa: E402


def main() -> dict:
    from bttui.runs.events import EventWriter
    from bttui.train.telemetry import GpuTelemetry, host_rss_mb

    device = torch.device("cpu")
    telemetry = GpuTelemetry(None)
    with tempfile.TemporaryDirectory() as tmp:
        writer = EventWriter(Path(tmp) / "events.jsonl")
        n = 2000

        def one_event(i: int) -> None:
            fields = dict(stage="pretrain", step=i, epoch=1, loss=812.4 + i, on_diag=700.1, off_diag=112.3, lr=0.03,
                          images_per_s=123.4, data_wait=0.1234, step_time=0.12345)
            rss = host_rss_mb()
            if rss is not None:
                fields["rss_mb"] = rss
            fields.update(telemetry.sample())
            writer.write("step", **fields)

        for i in range(50):
            one_event(i)
        t0 = time.perf_counter()
        for i in range(n):
            one_event(i)
        t_event = (time.perf_counter() - t0) / n
        writer.close()

    step = BttuiStep(device, "fp32", [2048, 2048, 2048])
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.randn(16, 3, 32, 32, generator=g), torch.randn(16, 3, 32, 32, generator=g)
    t_step = timed(lambda i: step(v1, v2), 5, 2, device)
    out = {"machine": machine(), "event_write_ms": round(t_event * 1e3, 4), "cpu_step_ms": round(t_step * 1e3, 2),
           "ratio_every_step": round(t_event / t_step, 6), "ratio_log_every_10": round(t_event / t_step / 10, 7)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
