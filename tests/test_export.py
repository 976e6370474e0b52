"""`bttui export`: result tables, confusion matrices, plots as PNG, and the backbone as a torchvision state dict."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from bttui.cli import app
from test_compare import item, make_run

RUN = "20241125-205800-a-0001"


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB, filter-0 PNG (what write_png writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    results = [item(0.9, seed=0, fraction=0.1), item(0.95, seed=0, fraction=1.0), item(0.93, seed=1, fraction=1.0)]
    for r in results:
        r["artifacts"] = f"artifacts/cells/{r['cell'].replace('/', '--')}"
    d = make_run(tmp_path / "store", RUN, results)
    rng = np.random.default_rng(0)
    cell = d / results[0]["artifacts"]
    cell.mkdir(parents=True)
    np.savez(cell / "embedding_tsne.npz", coords=rng.normal(size=(30, 2)).astype(np.float32),
             labels=np.arange(30) % 3, class_names=np.asarray(["liver", "spleen", "kidney"]), method=np.asarray("tsne"))
    return d


def test_write_png_round_trips():
    from bttui.render.plots import write_png

    img = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    path = write_png(Path(__import__("tempfile").mkdtemp()) / "x.png", img)
    assert np.array_equal(read_png(path), img)


def test_export_csv_json_png(runner, run_dir, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["--store", str(run_dir.parent), "export", RUN, "--format", "csv,json", "-f", "png",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["test_accuracy"] for r in rows] == ["0.9", "0.95", "0.93"] and rows[0]["test_accuracy_ci_low"] == "0.85"
    agg = list(csv.DictReader((out / "aggregated.csv").open()))
    assert [(a["label_fraction"], a["n"]) for a in agg] == [("0.1", "1"), ("1.0", "2")]
    assert float(agg[1]["mean"]) == pytest.approx(0.94)
    conf = sorted((out / "confusion").glob("*.csv"))
    assert len(conf) == 3
    lines = list(csv.reader(conf[0].open()))
    assert lines[0][0] == "true \\ predicted" and lines[1][:3] == ["adipose", "1", "0"]
    assert json.loads((out / "run.json").read_text())["id"] == RUN
    assert json.loads((out / "aggregated.json").read_text())[1]["n"] == 2
    assert (out / "layer_probe.csv").is_file()
    img = read_png(out / "accuracy_crc.png")
    assert img.shape[2] == 3 and (img != 255).any()
    assert len(list((out / "confusion").glob("*.png"))) == 3
    scatter = list((out / "embeddings").glob("*.png"))
    assert len(scatter) == 1 and (read_png(scatter[0]) != 255).any()
    res = runner.invoke(app, ["--store", str(run_dir.parent), "export", RUN, "--format", "xlsx"])
    assert res.exit_code == 2 and "csv, json, png" in res.stderr


def test_show_embeddings_draws_a_scatter(run_dir):
    from rich.console import Console

    from bttui.cli.views import print_embeddings
    from bttui.runs.store import Store

    record = Store(run_dir.parent).resolve(RUN)
    console = Console(record=True, width=90, color_system=None)
    assert print_embeddings(console, record, "tsne") == 1
    text = console.export_text()
    assert "liver" in text and "kidney" in text and "tsne" in text
    assert print_embeddings(console, record, "umap") == 0
    assert "no umap embeddings" in console.export_text()


def test_export_backbone_is_a_torchvision_state_dict(runner, run_dir, tmp_path):
    import torch
    import torchvision

    from bttui.train.model import build_backbone

    res = runner.invoke(app, ["--store", str(run_dir.parent), "export", RUN, "--backbone", str(tmp_path / "bb.pt")])
    assert res.exit_code == 2 and "pretrain_final.pt does not exist" in res.stderr
    torch.manual_seed(3)
    backbone = build_backbone()
    (run_dir / "checkpoints").mkdir()
    torch.save({"kind": "bttui-pretrain", "backbone": "resnet18", "epoch": 2,
                "model": {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
                          "projector.0.weight": torch.zeros(8, 512)}}, run_dir / "checkpoints" / "pretrain_final.pt")
    res = runner.invoke(app, ["--store", str(run_dir.parent), "export", RUN, "--backbone", str(tmp_path / "bb.pt")])
    assert res.exit_code == 0, res.output
    sd = torch.load(tmp_path / "bb.pt", weights_only=True)
    net = torchvision.models.resnet18()
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    assert torch.equal(net.layer4[1].conv2.weight, backbone.layer4[1].conv2.weight)
