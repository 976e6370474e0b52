"""The fine-tuning grid: one CellSpec per dataset x init x strategy x label fraction x seed."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from bttui.config.init_spec import InitSpec, StrategySpec, parse_init, parse_strategy
from bttui.config.schema import ExperimentConfig

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@-]+")
SLUG_MAX = 100
"""Longest slug kept verbatim; well under the 255-byte limit of a path component."""


@dataclass(frozen=True)
class CellSpec:
    """One fine-tuning cell; `.id` names it in events and results, `.slug` names its artifacts folder."""

    dataset: str
    task: str | None
    init: str
    strategy: str
    label_fraction: float
    seed: int

    @property
    def id(self) -> str:
        """`<dataset>/<init>/<strategy>/<fraction:g>/s<seed>`, e.g. organs_sagittal/barlow_twins/linear/0.1/s0."""
        return f"{self.dataset}/{self.init}/{self.strategy}/{self.label_fraction:g}/s{self.seed}"

    @property
    def slug(self) -> str:
        """The id as one safe path component: parts joined by `--`; a hash keeps lossy or long slugs unique."""
        # Reversible substitutions: the init kind's colon ("run:abc"), the surgical colon and commas.
        parts = [self.dataset, self.init.replace(":", "-", 1), self.strategy.replace(":", "-").replace(",", "+"),
                 f"{self.label_fraction:g}", f"s{self.seed}"]
        lossy = any(_UNSAFE.search(part) for part in parts)
        cleaned = [_UNSAFE.sub("_", part) for part in parts]
        slug = "--".join(cleaned)
        # A leading dot would hide the folder; "." and ".." would not be folders of their own.
        lossy = lossy or slug.startswith(".")
        slug = slug.lstrip(".") or "cell"
        if lossy or len(slug) > SLUG_MAX:
            digest = hashlib.sha1(self.id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
            slug = f"{slug[:SLUG_MAX - 11]}-{digest}"
        return slug

    @property
    def init_spec(self) -> InitSpec:
        """The parsed init."""
        return parse_init(self.init)

    @property
    def strategy_spec(self) -> StrategySpec:
        """The parsed strategy."""
        return parse_strategy(self.strategy)


def expand_cells(cfg: ExperimentConfig) -> list[CellSpec]:
    """Every cell of the config's [finetune] grid, in dataset, init, strategy, fraction, seed order ([] without it)."""
    ft = cfg.finetune
    if ft is None:
        return []
    return [
        CellSpec(dataset, ft.task, init, strategy, float(fraction), int(seed))
        for dataset in ft.datasets
        for init in ft.init
        for strategy in ft.strategy
        for fraction in ft.label_fractions
        for seed in ft.seeds
    ]
