"""Live progress of one run from its events and status: plain lines for logs, a Rich view for terminals."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.text import Text

from bttui.render.format import clean, fmt_accuracy, fmt_duration, fmt_loss, fmt_rate, fmt_seconds
from bttui.render.glyphs import status_glyph, status_style


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(value: Any) -> int | None:
    v = _num(value)
    return int(v) if v is not None else None


def cells_in_config(config: Mapping[str, Any] | None) -> int | None:
    """How many fine-tuning cells a config dict expands to (datasets x init x strategy x fractions x seeds)."""
    if not isinstance(config, Mapping):
        return None
    ft = config.get("finetune")
    if not isinstance(ft, Mapping):
        return 0 if "finetune" not in config or ft is None else None
    total = 1
    for key in ("datasets", "init", "strategy", "label_fractions", "seeds"):
        value = ft.get(key)
        if not isinstance(value, (list, tuple)):
            return None
        total *= len(value)
    return total


class ProgressState:
    """What is known about a run being followed, built from its events (``feed``) and status.json (``update_status``).

    ``feed`` returns the plain lines an event deserves (pretraining epochs, finished
    cells, log messages, status changes); ``renderable`` draws the live view.
    Epoch numbers in events are taken as 1-based counts of finished epochs.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.status: str | None = None
        self.reason: str | None = None
        self.stage: str | None = None
        self.stage_started: float | None = None
        self.pretrain_epochs: int | None = None
        self.finetune_epochs: int | None = None
        self.cells_total: int | None = None
        self.epoch: int | None = None
        self.step: int | None = None
        self.steps: int | None = None
        self.loss: float | None = None
        self.images_per_s: float | None = None
        # Pretraining ETA: time and epoch count when this follow first saw the
        # stage, and of the latest finished epoch.
        self._epoch_base: tuple[float, int] | None = None
        self._last_epoch: tuple[float, int] | None = None
        self._step_base: tuple[float, int] | None = None
        self._last_step: tuple[float, int] | None = None
        # Fine-tuning.
        self.cell: str | None = None
        self.cell_index = 0
        self.cells_seen: list[str] = []
        self.cells_done = 0
        self.cell_epoch: int | None = None
        self.cell_started: float | None = None
        self.cell_durations: list[float] = []
        self.val_accuracy: float | None = None
        self.best_accuracy: float | None = None
        self.results: list[dict] = []
        if config is not None:
            self._take_config(config)

    # ----- input -----

    def _take_config(self, config: Mapping[str, Any]) -> None:
        pre = config.get("pretrain")
        if isinstance(pre, Mapping):
            self.pretrain_epochs = _int(pre.get("epochs"))
        ft = config.get("finetune")
        if isinstance(ft, Mapping):
            self.finetune_epochs = _int(ft.get("epochs"))
        n = cells_in_config(config)
        if n is not None:
            self.cells_total = n

    def update_status(self, status: Mapping[str, Any] | None) -> None:
        """Merge a status.json dict (stage, epoch, step, loss, cells_done/cells_total ...)."""
        if not status:
            return
        self.status = status.get("status") or self.status
        self.reason = status.get("reason")
        stage = status.get("stage")
        if stage and stage != self.stage:
            self.stage = stage
        for name in ("epoch", "step", "steps"):
            v = _int(status.get(name))
            if v is not None:
                setattr(self, name, v)
        if self.stage == "pretrain":
            epochs = _int(status.get("epochs"))
            if epochs:
                self.pretrain_epochs = epochs
        loss = _num(status.get("loss"))
        if loss is not None:
            self.loss = loss
        total = _int(status.get("cells_total"))
        if total:
            self.cells_total = total
        done = _int(status.get("cells_done"))
        if done is not None:
            self.cells_done = max(self.cells_done, done)
        best = _num(status.get("best_accuracy"))
        if best is not None:
            self.best_accuracy = best
        if status.get("cell"):
            self.cell = str(status["cell"])

    def feed(self, event: Mapping[str, Any]) -> list[str]:
        """Take one event; return the plain progress lines it deserves (often none)."""
        kind = event.get("type")
        t = _num(event.get("t")) or self.clock()
        if kind == "config":
            cfg = event.get("config")
            if isinstance(cfg, Mapping) and cfg:
                self._take_config(cfg)
            return []
        if kind == "stage_start":
            self.stage = event.get("stage") or self.stage
            self.stage_started = t
            if self.stage == "pretrain":
                self.pretrain_epochs = _int(event.get("epochs")) or self.pretrain_epochs
                # A resumed stage starts after the epochs its checkpoint holds.
                self._epoch_base = (t, _int(event.get("start_epoch")) or 0)
                self.steps = _int(event.get("steps")) or self.steps
                self._step_base = self._last_step = None
                epochs = f" ({self.pretrain_epochs} epochs)" if self.pretrain_epochs else ""
                return [f"pretrain started{epochs}"]
            if self.stage == "finetune":
                cells = f" ({self.cells_total} cells)" if self.cells_total is not None else ""
                return [f"finetune started{cells}"]
            return [f"{clean(self.stage, single_line=True)} started"]
        if kind == "stage_end":
            stage = clean(event.get("stage") or self.stage, single_line=True)
            outcome = event.get("status") or "completed"
            if outcome != "completed":
                reason = f": {clean(event.get('reason'), single_line=True)}" if event.get("reason") else ""
                return [f"{stage} {clean(outcome, single_line=True)}{reason}"]
            took = f" in {fmt_duration(t - self.stage_started)}" if self.stage_started else ""
            return [f"{stage} done{took}"]
        if kind == "step":
            self._take_step(event, t)
            return []
        if kind == "epoch":
            return self._take_epoch(event, t)
        if kind == "cell_start":
            return self._take_cell_start(event, t)
        if kind == "cell_epoch":
            self.cell_epoch = _int(event.get("epoch"))
            val = _num(event.get("val_accuracy"))
            if val is not None:
                self.val_accuracy = val
            loss = _num(event.get("train_loss"))
            if loss is not None:
                self.loss = loss
            return []
        if kind == "cell_end":
            return self._take_cell_end(event, t)
        if kind == "log":
            level = str(event.get("level") or "info").lower()
            if level == "debug":
                return []
            return [f"{clean(level, single_line=True)}: {clean(event.get('message'))}"]
        if kind == "status":
            self.status = event.get("status") or self.status
            self.reason = event.get("reason")
            reason = f" ({clean(self.reason, single_line=True)})" if self.reason else ""
            return [f"status {clean(self.status, single_line=True)}{reason}"]
        if kind == "checkpoint":
            return [f"checkpoint {clean(event.get('path'), single_line=True)}"]
        return []

    def _take_step(self, event: Mapping[str, Any], t: float) -> None:
        if event.get("stage"):
            self.stage = event["stage"]
        step = _int(event.get("step"))
        if step is not None:
            self.step = step
            # The first step event carries start-up time (data, warm-up); the pace is measured after it.
            if self._step_base is None:
                self._step_base = (t, step)
            self._last_step = (t, step)
        loss = _num(event.get("loss"))
        if loss is not None:
            self.loss = loss
        rate = _num(event.get("images_per_s"))
        if rate is not None:
            self.images_per_s = rate

    def _take_epoch(self, event: Mapping[str, Any], t: float) -> list[str]:
        epoch = _int(event.get("epoch"))
        loss = _num(event.get("loss"))
        if loss is not None:
            self.loss = loss
        if epoch is None:
            return []
        self.epoch = epoch
        if self._epoch_base is None:
            # Followed from the middle: the first epoch seen is the ETA baseline.
            self._epoch_base = (self.stage_started or t, epoch - 1)
        prev_t = self._last_epoch[0] if self._last_epoch else (self.stage_started or self._epoch_base[0])
        self._last_epoch = (t, epoch)
        of = f"/{self.pretrain_epochs}" if self.pretrain_epochs else ""
        line = f"pretrain epoch {epoch}{of} loss {fmt_loss(loss)} ({fmt_seconds(t - prev_t)})"
        knn = _num(event.get("knn_accuracy"))
        if knn is not None:
            line += f" knn {fmt_accuracy(knn)}"
        return [line]

    def _take_cell_start(self, event: Mapping[str, Any], t: float) -> list[str]:
        self.stage = "finetune"
        cell = str(event.get("cell") or "")
        self.cell = cell
        if cell not in self.cells_seen:
            self.cells_seen.append(cell)
        self.cell_index = self.cells_seen.index(cell) + 1
        self.cell_started = t
        self.cell_epoch = None
        self.val_accuracy = None
        return []

    def _take_cell_end(self, event: Mapping[str, Any], t: float) -> list[str]:
        cell = str(event.get("cell") or self.cell or "")
        if cell not in self.cells_seen:
            self.cells_seen.append(cell)
        # Followers read events.jsonl from its start, so the order seen is the run's order.
        index = self.cells_seen.index(cell) + 1
        self.cells_done = max(self.cells_done, index)
        if self.cell_started is not None:
            self.cell_durations.append(t - self.cell_started)
        self.cell_started = None
        # The trainer nests the result item under "result"; flat events are accepted too.
        nested = event.get("result")
        result = dict(nested) if isinstance(nested, Mapping) else {k: v for k, v in event.items() if k not in ("t", "type")}
        self.results.append(result)
        acc = _num(result.get("test_accuracy"))
        if acc is not None and (self.best_accuracy is None or acc > self.best_accuracy):
            self.best_accuracy = acc
        of = f"/{self.cells_total}" if self.cells_total else ""
        status = str(result.get("status") or "completed")
        head = f"cell {index}{of} {clean(cell, single_line=True)}"
        if status == "completed" or (acc is not None and status not in ("failed", "skipped")):
            return [f"{head} acc {fmt_accuracy(acc)}"]
        reason = result.get("error") or result.get("reason")
        why = f": {clean(reason, single_line=True)}" if reason else ""
        return [f"{head} {clean(status, single_line=True)}{why}"]

    # ----- derived -----

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left in the current stage, from the pace so far; None until there is a pace."""
        now = self.clock() if now is None else now
        if self.stage == "pretrain":
            if self._epoch_base and self._last_epoch and self.pretrain_epochs:
                (t0, e0), (t1, e1) = self._epoch_base, self._last_epoch
                if e1 > e0 and t1 > t0:
                    per_epoch = (t1 - t0) / (e1 - e0)
                    return max(0.0, (self.pretrain_epochs - e1) * per_epoch - (now - t1))
            # Before the first epoch ends: the pace of the steps since the first one.
            if self._step_base and self._last_step and self.steps:
                (t0, s0), (t1, s1) = self._step_base, self._last_step
                if s1 > s0 and t1 > t0:
                    per_step = (t1 - t0) / (s1 - s0)
                    return max(0.0, (self.steps - s1) * per_step - (now - t1))
            return None
        if self.stage == "finetune" and self.cells_total:
            remaining = self.cells_total - self.cells_done
            if remaining <= 0:
                return 0.0
            in_cell = (now - self.cell_started) if self.cell_started is not None else 0.0
            if self.cell_durations:
                per_cell = sum(self.cell_durations) / len(self.cell_durations)
            elif self.cell_epoch and self.finetune_epochs and self.cell_started is not None:
                # No cell finished yet: extrapolate the current one over its epochs
                # (early stopping makes this an upper bound).
                per_cell = in_cell / self.cell_epoch * self.finetune_epochs
            else:
                return None
            return max(0.0, remaining * per_cell - in_cell)
        return None

    def fraction(self) -> float | None:
        """How far the current stage is, 0-1."""
        if self.stage == "pretrain" and self.steps and self.step is not None:
            return min(1.0, self.step / self.steps)
        if self.stage == "pretrain" and self.pretrain_epochs and self.epoch is not None:
            return min(1.0, self.epoch / self.pretrain_epochs)
        if self.stage == "finetune" and self.cells_total:
            part = 0.0
            if self.cell_epoch and self.finetune_epochs and self.cell_started is not None:
                part = min(1.0, self.cell_epoch / self.finetune_epochs)
            return min(1.0, (self.cells_done + part) / self.cells_total)
        return None

    def summary_text(self, now: float | None = None) -> Text:
        """One line: status, stage, cell i/n, epoch e/E, step, loss, images/s, ETA."""
        status = self.status or "running"
        text = Text(f"{status_glyph(status)} {clean(status, single_line=True)}", style=status_style(status))
        parts: list[str] = []
        if self.stage:
            parts.append(clean(self.stage, single_line=True))
        if self.stage == "finetune":
            if self.cells_total:
                parts.append(f"cell {max(self.cell_index, 1)}/{self.cells_total}")
            if self.cell:
                parts.append(clean(self.cell, single_line=True))
            if self.cell_epoch is not None:
                of = f"/{self.finetune_epochs}" if self.finetune_epochs else ""
                parts.append(f"epoch {self.cell_epoch}{of}")
            if self.val_accuracy is not None:
                parts.append(f"val {fmt_accuracy(self.val_accuracy)}")
        else:
            if self.epoch is not None:
                of = f"/{self.pretrain_epochs}" if self.pretrain_epochs else ""
                parts.append(f"epoch {self.epoch}{of}")
            if self.step is not None:
                parts.append(f"step {self.step}" + (f"/{self.steps}" if self.steps else ""))
        if self.loss is not None:
            parts.append(f"loss {fmt_loss(self.loss)}")
        if self.images_per_s is not None and self.stage == "pretrain":
            parts.append(fmt_rate(self.images_per_s))
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {fmt_duration(eta)}")
        if parts:
            text.append("  " + " · ".join(parts))
        return text

    def renderable(self, now: float | None = None) -> RenderableType:
        """The live view: the summary line over a progress bar of the current stage."""
        frac = self.fraction()
        line = self.summary_text(now)
        if frac is None:
            return line
        bar = ProgressBar(total=1000, completed=int(frac * 1000), width=None)
        return Group(line, Group(bar, Text(f"{frac * 100:.0f}% of {self.stage}", style="dim")))
