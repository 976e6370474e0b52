"""Tests for the fine-tuning grid (expand_cells, CellSpec ids and slugs) and the init / strategy grammars."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings, strategies as st

from bttui.config import (
    CellSpec,
    ExperimentConfig,
    FinetuneConfig,
    InitSpec,
    StrategySpec,
    expand_cells,
    parse_init,
    parse_strategy,
)
from bttui.config.init_spec import InitSpecError

SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_+=@-][A-Za-z0-9._+=@-]*$")


def _cfg(**finetune) -> ExperimentConfig:
    return ExperimentConfig(finetune=FinetuneConfig(**finetune))


def test_expand_cells_order_and_count():
    cfg = _cfg(datasets=["organs_sagittal", "crc"], init=["barlow_twins", "imagenet"], strategy=["linear", "full"],
               label_fractions=[0.1, 1.0], seeds=[0, 1], task="organ label")
    cells = expand_cells(cfg)
    assert len(cells) == 2 * 2 * 2 * 2 * 2
    assert cells[0] == CellSpec("organs_sagittal", "organ label", "barlow_twins", "linear", 0.1, 0)
    assert cells[1].seed == 1 and cells[2].label_fraction == 1.0 and cells[4].strategy == "full"
    assert cells[8].init == "imagenet" and cells[16].dataset == "crc"
    assert cells[-1] == CellSpec("crc", "organ label", "imagenet", "full", 1.0, 1)
    assert [c.id for c in cells[:3]] == [
        "organs_sagittal/barlow_twins/linear/0.1/s0",
        "organs_sagittal/barlow_twins/linear/0.1/s1",
        "organs_sagittal/barlow_twins/linear/1/s0",
    ]
    assert len({c.id for c in cells}) == len(cells) == len({c.slug for c in cells})


def test_expand_cells_without_finetune_is_empty():
    assert expand_cells(dataclasses.replace(ExperimentConfig(), finetune=None)) == []


def test_default_grid():
    cells = expand_cells(ExperimentConfig())
    assert len(cells) == 1 * 2 * 2 * 4 * 1
    assert cells[0].id == "organs_sagittal/barlow_twins/linear/0.1/s0"
    assert cells[0].task is None


@pytest.mark.parametrize(
    ("fraction", "text"), [(0.1, "0.1"), (1.0, "1"), (0.25, "0.25"), (0.005, "0.005"), (0.5, "0.5"), (1e-5, "1e-05")])
def test_fraction_formatting_in_ids(fraction, text):
    cell = CellSpec("crc", None, "imagenet", "full", fraction, 3)
    assert cell.id == f"crc/imagenet/full/{text}/s3"


@pytest.mark.parametrize(
    ("init", "strategy", "slug"),
    [
        ("barlow_twins", "linear", "organs_sagittal--barlow_twins--linear--0.1--s0"),
        ("run:20240101-abc", "full", "organs_sagittal--run-20240101-abc--full--0.1--s0"),
        ("barlow_twins@epoch=5", "surgical:layer3,layer4", "organs_sagittal--barlow_twins@epoch=5--surgical-layer3+layer4--0.1--s0"),
    ],
)
def test_slug_readable_when_lossless(init, strategy, slug):
    cell = CellSpec("organs_sagittal", None, init, strategy, 0.1, 0)
    assert cell.slug == slug
    assert SAFE_COMPONENT.match(cell.slug)


def test_slug_of_checkpoint_paths_is_safe_and_unique():
    a = CellSpec("crc", None, "checkpoint:/data/x/best.pt", "linear", 0.1, 0)
    b = CellSpec("crc", None, "checkpoint:/data/x_best.pt", "linear", 0.1, 0)
    for cell in (a, b):
        assert "/" not in cell.slug and ":" not in cell.slug
        assert SAFE_COMPONENT.match(cell.slug)
    assert a.slug != b.slug
    assert re.search(r"-[0-9a-f]{10}$", a.slug)
    long = CellSpec("crc", None, "checkpoint:/" + "d/" * 200 + "x.pt", "linear", 0.1, 0)
    assert len(long.slug) <= 100 and SAFE_COMPONENT.match(long.slug)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=60), st.floats(1e-6, 1.0), st.integers(0, 99))
def test_slug_is_always_one_safe_component(dataset, init, fraction, seed):
    cell = CellSpec(dataset, None, init, "full", fraction, seed)
    assert SAFE_COMPONENT.match(cell.slug), cell.slug
    assert cell.slug not in (".", "..") and len(cell.slug) <= 100


def test_cellspec_is_frozen_and_hashable():
    cell = CellSpec("crc", None, "imagenet", "full", 0.5, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.seed = 1  # type: ignore[misc]
    assert {cell: 1}[CellSpec("crc", None, "imagenet", "full", 0.5, 0)] == 1
    assert cell.init_spec == InitSpec("imagenet") and cell.strategy_spec == StrategySpec("full")


@pytest.mark.parametrize(
    ("text", "spec", "canonical"),
    [
        ("random", InitSpec("random"), "random"),
        ("imagenet", InitSpec("imagenet"), "imagenet"),
        ("barlow_twins", InitSpec("barlow_twins"), "barlow_twins"),
        ("barlow_twins@epoch=10", InitSpec("barlow_twins", None, 10), "barlow_twins@epoch=10"),
        ("run:2024-abc", InitSpec("run", "2024-abc"), "run:2024-abc"),
        ("run:abc@epoch=5", InitSpec("run", "abc", 5), "run:abc@epoch=5"),
        (" checkpoint: ../x@y.pt @epoch=2", InitSpec("checkpoint", "../x@y.pt", 2), "checkpoint:../x@y.pt@epoch=2"),
        ("checkpoint:/a/b.pt", InitSpec("checkpoint", "/a/b.pt"), "checkpoint:/a/b.pt"),
    ],
)
def test_parse_init_valid(text, spec, canonical):
    assert parse_init(text) == spec
    assert str(parse_init(text)) == canonical
    assert parse_init(canonical) == spec


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("imagent", "unknown init"),
        ("", "unknown init"),
        ("run:", "run: needs a run id"),
        ("run:a b", "run: needs a run id"),
        ("checkpoint:", "checkpoint: needs a file path"),
        ("random:x", "takes no ':' reference"),
        ("random@epoch=2", "@epoch= applies only to"),
        ("barlow_twins@epoch=0", "from 1 to"),
        ("barlow_twins@epoch=-1", "from 1 to"),
        ("barlow_twins@epoch=1.5", "from 1 to"),
        ("barlow_twins@epoch=99999999999", "from 1 to"),
        ("barlow_twins@epoch=", "from 1 to"),
    ],
)
def test_parse_init_invalid(text, fragment):
    with pytest.raises(InitSpecError, match=re.escape(fragment)):
        parse_init(text)


def test_parse_strategy():
    assert parse_strategy("linear") == StrategySpec("linear")
    assert parse_strategy(" full ") == StrategySpec("full")
    assert parse_strategy("surgical:layer4, conv1") == StrategySpec("surgical", ("conv1", "layer4"))
    assert str(parse_strategy("surgical:layer4,layer3")) == "surgical:layer3,layer4"
    for text, fragment in [("partial", "unknown strategy"), ("surgical:", "at least one layer"),
                           ("surgical:layer5", "unknown layer 'layer5'; valid layers: conv1, bn1, layer1"),
                           ("surgical:layer1,layer1", "twice"), ("surgical", "unknown strategy")]:
        with pytest.raises(InitSpecError, match=re.escape(fragment)):
            parse_strategy(text)
