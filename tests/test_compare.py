"""Seeds aggregated per combination, the paper's numbers as data, `bttui compare`, and the shipped paper configs."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from bttui.cli import app
from bttui.paper import PAPER, paper_table, protocol_differences
from bttui.results import aggregate_results, cell_artifacts_dir, init_key

REPO = Path(__file__).resolve().parents[1]
CRC_CLASSES = ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
               "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]


def item(acc, *, seed=0, fraction=1.0, init="barlow_twins:RUNID", strategy="linear", dataset="crc",
         classes=CRC_CLASSES, n_test=100, status="completed") -> dict:
    k = len(classes)
    return {"cell": f"{dataset}/{init.split(':')[0]}/{strategy}/{fraction:g}/s{seed}", "dataset": dataset, "task": "t",
            "init": init, "strategy": strategy, "label_fraction": fraction, "n_train": 10, "seed": seed,
            "status": status, "test_accuracy": acc, "per_class_accuracy": [acc] * k if acc is not None else None,
            "confusion_matrix": [[1 if i == j else 0 for j in range(k)] for i in range(k)], "class_names": classes,
            "lineage": {"backbone_from": None}, "test_accuracy_ci": [acc - 0.05, acc + 0.05] if acc is not None else None,
            "balanced_accuracy": acc, "macro_f1": acc, "probe": "lbfgs", "n_test": n_test,
            "layer_probe": {"layer1": 0.5, "layer4": acc} if acc is not None else None}


def test_aggregate_results_groups_seeds_and_drops_the_run_id():
    rows = aggregate_results([
        item(0.90, seed=0, init="barlow_twins:run-a"), item(0.80, seed=1, init="barlow_twins:run-b"),
        item(0.70, seed=0, init="imagenet"), item(None, seed=1, init="imagenet", status="failed"),
        item(0.60, seed=0, init="barlow_twins:run-a@epoch=5"),
    ])
    assert [(r["init"], r["n"]) for r in rows] == [("barlow_twins", 2), ("imagenet", 1), ("barlow_twins@epoch=5", 1)]
    bt = rows[0]
    assert bt["mean"] == pytest.approx(0.85) and bt["std"] == pytest.approx(0.0707107, rel=1e-4)
    assert (bt["min"], bt["max"], bt["seeds"]) == (0.80, 0.90, [0, 1])
    assert bt["ci"] == pytest.approx([0.80, 0.90]) and bt["per_class_accuracy"][0] == pytest.approx(0.85)
    assert bt["layer_probe"] == {"layer1": 0.5, "layer4": pytest.approx(0.85)}
    assert rows[1]["failed"] == 1 and rows[1]["std"] == 0.0
    assert init_key("run:abc@epoch=3") == "run:abc@epoch=3"


def test_results_module_needs_no_heavy_imports():
    import subprocess
    import sys

    code = "import bttui.results, bttui.paper, bttui.cli.results_cmd, sys; print(sorted(m for m in ('torch','numpy','plotext','sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_paper_numbers_are_data_with_their_protocol():
    organs = paper_table("organs")
    assert organs is PAPER["organs_sagittal"] and organs.fractions() == [0.1, 0.25, 0.5, 1.0]
    values = [v for curve in organs.curves.values() for v in curve.values()]
    assert len(values) == 16
    for v in values:  # every organ number is k/164 (rounded to 2 decimals)
        k = round(v * 164 / 100)
        assert abs(k / 164 * 100 - v) < 0.006, v
    assert PAPER["crc"].curves[("barlow_twins", "linear")][0.005] == 91.25
    assert PAPER["crc"].curves[("imagenet", "full")][0.25] == 94.57
    assert sum(PAPER["crc"].per_class[("barlow_twins", "linear", 1.0)].values()) == pytest.approx(869.25)
    notes = protocol_differences(organs, {"data": {"split_policy": "mimeta", "grayscale": False, "image_size": 224}}, 618)
    assert any("split policy" in n for n in notes) and any("618 test images" in n for n in notes)
    assert protocol_differences(organs, {"data": {"split_policy": "random", "grayscale": True, "image_size": 224}}, 165) == []
    assert float(Fraction(104, 164)) * 100 == pytest.approx(63.41, abs=0.005)


@pytest.mark.parametrize("path", sorted((REPO / "experiments").rglob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    from bttui.config.cells import expand_cells
    from bttui.config.load import load_config

    cfg = load_config(path, check_paths=False)
    assert expand_cells(cfg)
    if path.parent.name == "paper":
        if path.stem.endswith("authors-code"):
            assert (cfg.preset, cfg.data.split_policy, cfg.data.grayscale) == ("authors-code", "random", True)
            assert cfg.pretrain.lambd == 0.005 and cfg.pretrain.augment == "simclr"
        else:
            assert cfg.data.split_policy == "mimeta" and not cfg.data.grayscale
        assert "imagenet" in cfg.finetune.init and "barlow_twins" in cfg.finetune.init


def test_paper_configs_cover_the_paper_protocol():
    from bttui.config.load import load_config

    crc = load_config(REPO / "experiments/paper/crc.toml", check_paths=False)
    assert crc.finetune.label_fractions == [0.005, 0.01, 0.1, 0.25, 0.5, 1.0] and crc.pretrain.datasets == ["crc"]
    assert {"linear", "full"} <= set(crc.finetune.strategy)
    organs = load_config(REPO / "experiments/paper/organs.toml", check_paths=False)
    assert organs.pretrain.datasets == ["organs_axial", "organs_coronal", "organs_sagittal"]
    assert organs.finetune.label_fractions == [0.1, 0.25, 0.5, 1.0]
    for name in ("crc", "organs"):
        assert (REPO / f"experiments/paper/{name}-authors-code.toml").is_file()
    quick = load_config(REPO / "experiments/quickstart.toml", check_paths=False)
    assert "umap" not in quick.finetune.embeddings


# ----------------------------------------------------------------- the command
def make_run(store: Path, run_id: str, results: list, *, sweep_id=None, split_policy="mimeta") -> Path:
    from bttui.config.load import config_to_toml, loads_config

    run_dir = store / run_id
    run_dir.mkdir(parents=True)
    cfg = loads_config('name = "r"\n[data]\nroot = "/nonexistent"\nimage_size = 224\nsplit_policy = "%s"\n'
                       '[pretrain]\nepochs = 1\n[finetune]\ninit = ["barlow_twins", "imagenet"]\n' % split_policy, check_paths=False)
    (run_dir / "config.toml").write_text(config_to_toml(cfg))
    (run_dir / "run.json").write_text(json.dumps({"format": 1, "id": run_id, "name": "r", "created": "2024-11-25T20:58:00+00:00",
                                                  "host": "box", "boot_id": "b", "sweep_id": sweep_id}))
    (run_dir / "status.json").write_text(json.dumps({"status": "completed", "pid": None, "host": "box", "boot_id": "b"}))
    (run_dir / "summary.json").write_text(json.dumps({"pretrain": None, "results": results}))
    (run_dir / "events.jsonl").write_text("")
    return run_dir


@pytest.fixture()
def cli_columns() -> str:
    """conftest's ``runner`` renders `bttui compare` at 140 columns in this module."""
    return "140"


def test_compare_paper_prints_the_papers_numbers_beside_the_runs(runner, tmp_path):
    store = tmp_path / "store"
    make_run(store, "20241125-205800-a-0001", [item(0.95, seed=0, fraction=f) for f in (0.1, 1.0)], sweep_id="sw1")
    make_run(store, "20241125-205900-b-0002", [item(0.97, seed=1, fraction=f) for f in (0.1, 1.0)], sweep_id="sw1")
    res = runner.invoke(app, ["--store", str(store), "compare", "sw1", "--paper", "crc"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    for number in ("91.25", "96.64", "97.97", "93.61"):  # the paper's rows
        assert number in out
    assert "96.0 ±1.4 (n=2)" in out  # two seeds across the sweep's two runs
    assert "per-class accuracy % vs the paper" in out and "-3.54" in out  # adipose: 96.0 - 99.54
    assert out.count("split policy: this run used 'mimeta' splits") == 1  # said once for both runs
    assert "label fraction" in out  # the chart
    data = json.loads(runner.invoke(app, ["--store", str(store), "compare", "sw1", "--paper", "crc", "--json"]).stdout)
    bt = [r for r in data["rows"] if r["label_fraction"] == 1.0][0]
    assert bt["n"] == 2 and bt["runs"] == ["20241125-205800-a-0001", "20241125-205900-b-0002"]
    adipose = [p for p in data["per_class"] if p["class"] == "adipose"][0]
    assert adipose["paper"] == 99.54 and adipose["diff"] == pytest.approx(96.0 - 99.54)


def test_compare_paper_alone_and_bad_input(runner, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    res = runner.invoke(app, ["--store", str(store), "compare", "--paper", "organs_sagittal"])
    assert res.exit_code == 0, res.output
    assert "63.41" in res.stdout and "79.88" in res.stdout and "1/164" in res.stdout
    res = runner.invoke(app, ["--store", str(store), "compare", "--paper", "mnist"])
    assert res.exit_code == 2 and "crc, organs_sagittal" in res.stderr
    res = runner.invoke(app, ["--store", str(store), "compare"])
    assert res.exit_code == 2 and "--paper" in res.stderr


def test_show_aggregates_seeds_and_lists_layer_probes(runner, tmp_path):
    store = tmp_path / "store"
    make_run(store, "20241125-205800-a-0001", [item(0.90, seed=0), item(0.80, seed=1)])
    res = runner.invoke(app, ["--store", str(store), "show", "20241125-205800-a-0001"])
    assert res.exit_code == 0, res.output
    assert "over seeds" in res.stdout and "85.0" in res.stdout and "7.1" in res.stdout
    assert "layer-wise linear probes" in res.stdout and "layer4" in res.stdout


def test_cell_artifacts_dir_matches_the_cell_slug(tmp_path):
    from bttui.config.cells import CellSpec

    spec = CellSpec("organs_sagittal", None, "checkpoint:/a/b.pt", "surgical:layer3,layer4", 0.25, 2)
    r = {"cell": spec.id}
    assert cell_artifacts_dir(tmp_path, r) == tmp_path / "artifacts" / "cells" / spec.slug
    assert cell_artifacts_dir(tmp_path, {**r, "artifacts": "artifacts/cells/x"}) == tmp_path / "artifacts/cells/x"
