"""Parse backbone init strings (`run:abc@epoch=5`) and fine-tuning strategy strings (`surgical:layer3,layer4`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

INIT_KINDS = ("random", "imagenet", "barlow_twins", "run", "checkpoint")
"""Every init kind; `run` and `checkpoint` carry a reference after a colon."""

SURGICAL_LAYERS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
"""ResNet parts a surgical strategy may train, in network order."""

PROBE_LAYERS = ("layer1", "layer2", "layer3", "layer4")
"""ResNet stages whose pooled output can be probed layer-wise."""

MAX_EPOCH = 1_000_000
"""Largest `@epoch=N` accepted; matches the cap on `pretrain.epochs`."""

INIT_GRAMMAR = ("random | imagenet | barlow_twins | run:<run id or prefix> | checkpoint:<path>, "
                "each optionally followed by @epoch=N (N >= 1)")
STRATEGY_GRAMMAR = "linear | full | surgical:<comma separated layers from " + ", ".join(SURGICAL_LAYERS) + ">"

_RUN_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_EPOCH_SUFFIX = "@epoch="


class InitSpecError(ValueError):
    """An init or strategy string that does not follow its grammar (the loader turns it into a ConfigError)."""


@dataclass(frozen=True)
class InitSpec:
    """A parsed backbone init: kind, reference (run id prefix or checkpoint path) and checkpoint epoch."""

    kind: str
    ref: str | None = None
    epoch: int | None = None

    def __str__(self) -> str:
        text = self.kind if self.ref is None else f"{self.kind}:{self.ref}"
        return text if self.epoch is None else f"{text}{_EPOCH_SUFFIX}{self.epoch}"


@dataclass(frozen=True)
class StrategySpec:
    """A parsed fine-tuning strategy: kind (linear, full, surgical) and, for surgical, the trained layers."""

    kind: str
    layers: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"surgical:{','.join(self.layers)}" if self.kind == "surgical" else self.kind


def parse_init(text: str) -> InitSpec:
    """Parse an init string; raise InitSpecError with the grammar on anything else."""
    if not isinstance(text, str):
        raise InitSpecError(f"an init must be a string ({INIT_GRAMMAR}), got {text!r}")
    body = text.strip()
    epoch = None
    # rpartition: a checkpoint path may itself contain "@epoch=", only the last suffix counts.
    if _EPOCH_SUFFIX in body:
        body, _, epoch_text = body.rpartition(_EPOCH_SUFFIX)
        epoch_text = epoch_text.strip()
        if not epoch_text.isascii() or not epoch_text.isdigit() or len(epoch_text) > 7:
            raise InitSpecError(f"init {text!r}: @epoch= needs a whole number from 1 to {MAX_EPOCH}, got {epoch_text!r}")
        epoch = int(epoch_text)
        if not 1 <= epoch <= MAX_EPOCH:
            raise InitSpecError(f"init {text!r}: @epoch= needs a whole number from 1 to {MAX_EPOCH}, got {epoch}")
        body = body.strip()
    kind, sep, ref = body.partition(":")
    kind = kind.strip()
    if kind in ("random", "imagenet", "barlow_twins"):
        if sep:
            raise InitSpecError(f"init {text!r}: {kind} takes no ':' reference; valid inits: {INIT_GRAMMAR}")
        if epoch is not None and kind != "barlow_twins":
            raise InitSpecError(f"init {text!r}: @epoch= applies only to barlow_twins, run: and checkpoint: inits, not {kind}")
        return InitSpec(kind, None, epoch)
    if kind == "run" and sep:
        ref = ref.strip()
        if not _RUN_REF.match(ref):
            raise InitSpecError(f"init {text!r}: run: needs a run id or id prefix (letters, digits, '.', '_', '-'), got {ref!r}")
        return InitSpec("run", ref, epoch)
    if kind == "checkpoint" and sep:
        ref = ref.strip()
        if not ref:
            raise InitSpecError(f"init {text!r}: checkpoint: needs a file path after the colon")
        return InitSpec("checkpoint", ref, epoch)
    raise InitSpecError(f"unknown init {text!r}; valid inits: {INIT_GRAMMAR}")


def parse_strategy(text: str) -> StrategySpec:
    """Parse a strategy string; raise InitSpecError naming the valid strategies and layers."""
    if not isinstance(text, str):
        raise InitSpecError(f"a strategy must be a string ({STRATEGY_GRAMMAR}), got {text!r}")
    body = text.strip()
    if body in ("linear", "full"):
        return StrategySpec(body)
    kind, sep, rest = body.partition(":")
    if kind.strip() != "surgical" or not sep:
        raise InitSpecError(f"unknown strategy {text!r}; valid strategies: {STRATEGY_GRAMMAR}")
    names = [name.strip() for name in rest.split(",")]
    if not any(names):
        raise InitSpecError(f"strategy {text!r}: surgical: needs at least one layer from {', '.join(SURGICAL_LAYERS)}")
    unknown = [name for name in names if name not in SURGICAL_LAYERS]
    if unknown:
        raise InitSpecError(f"strategy {text!r}: unknown layer {unknown[0]!r}; valid layers: {', '.join(SURGICAL_LAYERS)}")
    if len(set(names)) != len(names):
        raise InitSpecError(f"strategy {text!r} lists a layer twice")
    # Network order makes "surgical:layer4,layer3" and "surgical:layer3,layer4" the same cell.
    return StrategySpec("surgical", tuple(name for name in SURGICAL_LAYERS if name in names))
