"""Fine-tuning cells: frozen parts stay frozen, selection never sees the test split, metrics, probes, embeddings."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bttui.config.cells import CellSpec
from bttui.config.schema import ExperimentConfig
from bttui.errors import BttuiError
from bttui.train import finetune
from bttui.train.model import build_backbone

CLASSES = ["liver", "spleen", "kidney"]


def make_data(per_class: int = 16, size: int = 32, seed: int = 0) -> SimpleNamespace:
    """Three classes told apart by brightness and stripes; splits 50/25/25 per class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    images = rng.integers(0, 60, size=(len(labels), 3, size, size)).astype(np.int64)
    for i, c in enumerate(labels):
        images[i] += 60 * c
        images[i, :, :: 2 + c] += 40
    order = rng.permutation(len(labels))
    n = len(labels)
    splits = {"train": np.sort(order[: n // 2]), "val": np.sort(order[n // 2: 3 * n // 4]),
              "test": np.sort(order[3 * n // 4:])}
    from bttui.train.data import DatasetArrays

    return DatasetArrays(dataset_id="organs_sagittal", task="organ label", class_names=list(CLASSES),
                         images=np.clip(images, 0, 255).astype(np.uint8), labels=labels.astype(np.int64),
                         splits=splits, channels=1)


def make_cfg(**ft) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.data.image_size = 32
    cfg.pretrain.precision = "fp32"
    f = cfg.finetune
    f.epochs, f.batch_size, f.lr, f.patience, f.probe, f.embeddings = 2, 16, 1e-2, 0, "lbfgs", []
    for k, v in ft.items():
        setattr(f, k, v)
    return cfg


def run(cfg, data, strategy="linear", *, backbone=None, tmp_path, init="random", seed=0, fraction=1.0):
    cell = CellSpec("organs_sagittal", "organ label", init, strategy, fraction, seed)
    if backbone is not None:
        orig = finetune.resolve_init

        def fake(cfg_, init_text, seed_, **kw):
            return finetune.BackboneInit(backbone, init_text, None, None, "resnet18", {"backbone_from": None})
        finetune.resolve_init = fake
        try:
            return finetune.run_cell(cfg, cell, data, device=torch.device("cpu"), run_dir=tmp_path)
        finally:
            finetune.resolve_init = orig
    return finetune.run_cell(cfg, cell, data, device=torch.device("cpu"), run_dir=tmp_path)


def changed_keys(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.mark.parametrize("probe", ["lbfgs", "sgd"])
def test_linear_leaves_every_backbone_tensor_unchanged(tmp_path, data, probe):
    torch.manual_seed(0)
    backbone = build_backbone()
    before = copy.deepcopy(backbone.state_dict())  # parameters and BatchNorm running stats
    result = run(make_cfg(probe=probe), data, "linear", backbone=backbone, tmp_path=tmp_path)
    assert result["status"] == "completed" and result["probe"] == probe
    assert changed_keys(before, backbone.state_dict()) == set()


def test_surgical_layer4_trains_only_layer4(tmp_path, data):
    torch.manual_seed(0)
    backbone = build_backbone()
    before = copy.deepcopy(backbone.state_dict())
    result = run(make_cfg(), data, "surgical:layer4", backbone=backbone, tmp_path=tmp_path)
    changed = changed_keys(before, backbone.state_dict())
    assert changed and all(k.startswith("layer4.") for k in changed), sorted(changed)[:5]
    # weights and BatchNorm statistics of layer4 both moved
    assert any(k.endswith("conv1.weight") for k in changed) and any(k.endswith("running_mean") for k in changed)
    assert result["strategy"] == "surgical:layer4" and result["best_epoch"] in (1, 2)
    # full changes the stem too
    backbone = build_backbone()
    before = copy.deepcopy(backbone.state_dict())
    run(make_cfg(epochs=1), data, "full", backbone=backbone, tmp_path=tmp_path)
    assert {"conv1.weight", "bn1.running_mean"} <= changed_keys(before, backbone.state_dict())


def test_unknown_surgical_layer_lists_the_valid_ones(tmp_path):
    from bttui.config.load import loads_config

    with pytest.raises(BttuiError, match=r"unknown layer 'layer5'; valid layers: conv1, bn1, layer1, layer2, layer3, layer4"):
        loads_config('[finetune]\ninit = ["random"]\nstrategy = ["surgical:layer5"]\n', check_paths=False)


@pytest.mark.parametrize("strategy,probe", [("linear", "lbfgs"), ("linear", "sgd"), ("full", "sgd")])
def test_selection_never_uses_the_test_split(tmp_path, data, strategy, probe):
    """Scrambling the test labels changes the test accuracy and nothing that was selected."""
    cfg = make_cfg(probe=probe, epochs=2)
    a = run(cfg, data, strategy, tmp_path=tmp_path / "a")
    scrambled = copy.copy(data)
    scrambled.labels = data.labels.copy()
    test = data.splits["test"]
    scrambled.labels[test] = (data.labels[test] + 1) % 3
    b = run(cfg, scrambled, strategy, tmp_path=tmp_path / "b")
    for key in ("best_epoch", "val_accuracy", "probe_l2"):
        assert a.get(key) == b.get(key), key
    feats_a = np.load(tmp_path / "a" / a["artifacts"] / "test_features.npz")
    feats_b = np.load(tmp_path / "b" / b["artifacts"] / "test_features.npz")
    assert np.array_equal(feats_a["predictions"], feats_b["predictions"])  # the same model was selected
    assert not np.array_equal(feats_a["labels"], feats_b["labels"])


def test_result_item_metrics_layer_probes_and_embeddings(tmp_path, data):
    cfg = make_cfg(probe_layers=["layer1", "layer4"], embeddings=["tsne"])
    r = run(cfg, data, "linear", tmp_path=tmp_path)
    for key in ("test_accuracy", "balanced_accuracy", "macro_f1", "test_accuracy_ci", "probe", "per_class_accuracy",
                "confusion_matrix", "class_names", "lineage", "n_train", "layer_probe"):
        assert r.get(key) is not None, key
    lo, hi = r["test_accuracy_ci"]
    assert lo <= r["test_accuracy"] <= hi
    assert set(r["layer_probe"]) == {"layer1", "layer4"}
    assert all(0.0 <= v <= 1.0 for v in r["layer_probe"].values())
    assert r["embeddings"] == ["tsne"]
    with np.load(tmp_path / r["artifacts"] / "embedding_tsne.npz") as z:
        assert z["coords"].shape == (len(data.splits["test"]), 2)
        assert list(z["class_names"]) == CLASSES
        assert np.array_equal(z["labels"], data.labels[data.splits["test"]])


def test_layer_probe_reads_the_stage_outputs(data):
    backbone = build_backbone().eval()
    x = torch.from_numpy(data.images[:4])
    feats = finetune.stage_features(backbone, x, ("layer2", "layer4"), [0.5] * 3, [0.25] * 3, torch.device("cpu"), 2, None)
    assert feats["layer2"].shape == (4, 128) and feats["layer4"].shape == (4, 512)
    from bttui.train.model import extract_features

    full = extract_features(backbone, x, [0.5] * 3, [0.25] * 3, torch.device("cpu"))
    assert torch.allclose(feats["layer4"], full, atol=1e-5)  # layer4 pooled == the backbone's output


def test_a_task_with_one_class_is_a_clear_error(tmp_path, data):
    one = copy.copy(data)
    one.class_names = ["only"]
    with pytest.raises(BttuiError, match="has 1 class; classification needs at least 2"):
        run(make_cfg(), one, "linear", tmp_path=tmp_path)


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 500, 5000):
        correct = (rng.random(n) < 0.8).astype(float)
        lo, hi = finetune.bootstrap_ci(correct, seed=1)
        assert lo <= correct.mean() <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 5000), rel=0.2)


def test_lbfgs_probe_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d, k = 600, 20, 4
    centers = rng.normal(size=(k, d)) * 1.5
    y = rng.integers(0, k, n)
    x = (centers[y] + rng.normal(size=(n, d)) * 2.0).astype(np.float32)
    tr, te = slice(0, 450), slice(450, n)
    xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    l2 = 1e-2
    orig = finetune.LBFGS_L2_GRID
    readout, chosen, _ = finetune._fit_readout_lbfgs(xt, yt, None, None, k, lambda *a: None, lambda: False)
    assert chosen == 1e-4  # without a validation split the default strength is used
    finetune.LBFGS_L2_GRID = (l2,)
    try:
        readout, chosen, _ = finetune._fit_readout_lbfgs(xt, yt, xt, yt, k, lambda *a: None, lambda: False)
    finally:
        finetune.LBFGS_L2_GRID = orig
    assert chosen == l2
    # Ours: mean cross-entropy + l2/2 |W|^2 on standardised features; sklearn: C * sum CE + 1/2 |W|^2.
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sk = LogisticRegression(C=1.0 / (l2 * 450), max_iter=5000, tol=1e-8).fit((x[tr] - mu) / sd, y[tr])
    with torch.no_grad():
        ours_pred = readout(torch.from_numpy(x[te])).argmax(1).numpy()
        w_ours = (readout.weight * torch.from_numpy(sd)).numpy()  # back to standardised units
    sk_pred = sk.predict((x[te] - mu) / sd)
    assert abs((ours_pred == y[te]).mean() - (sk_pred == y[te]).mean()) <= 0.01
    # multinomial weights are defined up to a per-feature shift across classes: compare centred weights
    a = w_ours - w_ours.mean(0)
    b = sk.coef_ - sk.coef_.mean(0)
    assert np.abs(a - b).max() < 1e-2 * np.abs(b).max() + 1e-3
