"""Multi-process training under torchrun: process group, device per rank, DDP wrapping and rank agreement.

One process per GPU (``python -m torch.distributed.run --nproc-per-node N -m bttui.train RUN_DIR``),
as the Barlow Twins reference code does: every rank holds the whole uint8 cache, takes its
``batch_size / world_size`` slice of each global batch, and the loss sums the cross-correlation
across ranks (bttui.train.loss, ``distributed=True``). Only rank 0 writes anything to the run
directory. Without torchrun's environment (``WORLD_SIZE`` unset or 1) everything here is a no-op
and training is the plain single-process loop.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from bttui.errors import BttuiError

# Long enough for rank 0's per-epoch kNN check and checkpoint write while the other ranks wait.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)


@dataclass
class DistContext:
    """Who this process is in the job; ``world_size == 1`` means not distributed."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on at least one (e.g. SIGTERM reached only some ranks)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device(device))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_text(self, text: str | None, device: torch.device) -> str | None:
        """Rank 0's ``text`` (None included) on every rank: one decision for all (e.g. the collapse alarm)."""
        if not self.enabled:
            return text
        box = [text]
        torch.distributed.broadcast_object_list(box, src=0, device=self._comm_device(device))
        return box[0]

    def _comm_device(self, device: torch.device) -> torch.device:
        # NCCL only moves CUDA tensors; gloo only CPU ones.
        return torch.device(device) if self.backend == "nccl" else torch.device("cpu")


def env_world() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) from torchrun's environment; (1, 0, 0) outside torchrun."""
    def num(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value.strip() else default
        except ValueError:
            raise BttuiError(f"environment variable {name}={value!r} is not a whole number; torchrun sets "
                             "WORLD_SIZE, RANK and LOCAL_RANK itself, so unset them to train in one process") from None

    return num("WORLD_SIZE", 1), num("RANK", 0), num("LOCAL_RANK", 0)


def setup(device_pref: str = "auto") -> tuple[DistContext, torch.device]:
    """Initialise the process group when launched by torchrun and pick this rank's device.

    ``device_pref`` is ``resources.device``: on CUDA each rank takes GPU ``LOCAL_RANK`` and
    the backend is NCCL; on CPU the backend is gloo (used by the tests and CPU smoke runs).
    """
    world, rank, local_rank = env_world()
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise BttuiError("resources.device = \"cuda\" but torch sees no CUDA GPU on this machine "
                         f"(torch {torch.__version__}); use device = \"auto\" or \"cpu\".")
    if world <= 1:
        return DistContext(), torch.device("cuda" if use_cuda else "cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise BttuiError(f"torchrun started local rank {local_rank} but only {torch.cuda.device_count()} CUDA "
                             "GPU(s) are visible; lower resources.devices or --nproc-per-node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": PROCESS_GROUP_TIMEOUT}
        if backend == "nccl":
            kwargs["device_id"] = device  # binds the communicator to this GPU (no guessing on the first barrier)
        try:
            torch.distributed.init_process_group(**kwargs)
        except TypeError:
            kwargs.pop("device_id", None)
            torch.distributed.init_process_group(**kwargs)
    return DistContext(world_size=world, rank=rank, local_rank=local_rank, backend=backend), device


def teardown(ctx: DistContext) -> None:
    """Leave the process group (after a barrier so no rank tears down while another still talks)."""
    if ctx.enabled and torch.distributed.is_initialized():
        try:
            torch.distributed.barrier()
        finally:
            torch.distributed.destroy_process_group()


def exit_now(code: int) -> None:
    """End this process with ``code`` without interpreter teardown (after flushing stdout/stderr).

    Under a process group, gloo's C++ worker threads can still hold work objects when Python
    finalises; destroying them then aborts the process (SIGABRT, "terminate called without an
    active exception": PyTorch issue/PR 179291), turning a completed rank into a failed one.
    Everything a run writes is closed before this (events, status, summary are written atomically).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def check_batch(batch_size: int, world_size: int) -> int:
    """The per-rank batch; BttuiError when the global batch does not split evenly into at least 1 per rank."""
    if world_size > 1 and batch_size % world_size != 0:
        raise BttuiError(f"pretrain.batch_size = {batch_size} is not divisible by the number of training processes "
                         f"({world_size} = resources.devices x resources.nodes); each GPU takes an equal share of the "
                         f"global batch, so use a multiple of {world_size}, e.g. {batch_size // world_size * world_size or world_size}")
    return batch_size // max(1, world_size)


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP around ``model`` (BatchNorm -> SyncBatchNorm first on CUDA); ``model`` itself unchanged when alone.

    SyncBatchNorm gives the backbone and projector global batch statistics, as the reference
    does; it needs CUDA, so CPU (gloo) runs keep per-rank BatchNorm.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index,
                                       broadcast_buffers=False)
    return DistributedDataParallel(model, broadcast_buffers=False)


def sync_batchnorm(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` on CUDA under torchrun; unchanged otherwise."""
    if ctx.enabled and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def run_worker(run_dir: str | os.PathLike, resume: bool = False) -> int:
    """The whole life of a rank other than 0: pretrain in lockstep with rank 0, write nothing, exit.

    Fine-tuning cells run on rank 0 alone after pretraining, so the other ranks leave then
    (torchrun waits for rank 0 before it returns). The steps mirror ``Runner._main``: join the
    group, wait at the barrier rank 0 reaches after synthesising demo data, skip pretraining
    where rank 0 skips it, train, leave. A BttuiError (bad config or checkpoint) is deterministic,
    so rank 0 meets the same one and reports it in the run's status; this rank then exits 0 so
    torchrun does not kill rank 0 before it has written that status.
    """
    import signal
    import sys
    from pathlib import Path

    from bttui.config.load import load_config
    from bttui.runs.atomic import read_json
    from bttui.runs.layout import RunPaths
    from bttui.train.pretrain import FINAL_NAME, load_pretrain_data, run_pretraining

    paths = RunPaths(Path(run_dir).resolve())
    stop = {"flag": False}

    def on_signal(_signum: int, _frame: Any) -> None:
        stop["flag"] = True  # torchrun forwards SIGTERM; the loop agrees on the stop step with rank 0

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    ctx = DistContext()
    try:
        cfg = load_config(paths.config_toml)
        if cfg.resources.threads > 0:
            torch.set_num_threads(cfg.resources.threads)
        ctx, device = setup(cfg.resources.device)
        ctx.barrier()  # rank 0 has synthesised any demo data
        prev = read_json(paths.summary, default=None) if resume else None
        done = (resume and isinstance(prev, dict) and isinstance(prev.get("pretrain"), dict)
                and prev["pretrain"].get("status") == "completed" and (paths.checkpoints / FINAL_NAME).is_file())
        if cfg.pretrain is not None and not done:
            data = load_pretrain_data(cfg, cache_dir=paths.dir.parent / "cache")
            run_pretraining(cfg, data, paths.checkpoints, device=device, should_stop=lambda: stop["flag"],
                            resume=resume, dist=ctx)
        teardown(ctx)
        return 0
    except BttuiError as exc:
        print(f"bttui.train rank {ctx.rank}: {exc}", file=sys.stderr, flush=True)
        _abandon(ctx)
        return 0
    except BaseException:
        import traceback

        traceback.print_exc()
        _abandon(ctx)
        return 1


def _abandon(ctx: DistContext) -> None:
    # No barrier: the other ranks may be gone or stuck; just release this rank's resources.
    if ctx.enabled and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except Exception:
            pass
