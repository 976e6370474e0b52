"""Tests for bttui.train.data: mimeta-backed loading, resize, cache, label subsets, pretraining concat."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest

from bttui.data import reader, synth
from bttui.errors import BttuiError
from bttui.train import data as tdata

SIZE = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("mimeta")
    synth.synthesize(r, per_class=6, image_size=SIZE, seed=1)
    return r


def _raw(root, ds):
    with h5py.File(root / ds / "images.hdf5", "r") as f:
        return f["images"][:]


def test_native_size_pixels_labels_splits(root):
    a = tdata.load_dataset(root, "organs_sagittal", image_size=SIZE)
    assert a.task == "organ label" and a.class_names[0] == "heart" and len(a.class_names) == 11
    assert a.images.dtype == np.uint8 and a.images.shape == (66, 1, SIZE, SIZE) and a.channels == 1
    np.testing.assert_array_equal(a.images[:, 0], _raw(root, "organs_sagittal"))
    assert a.labels.dtype == np.int64
    np.testing.assert_array_equal(a.labels, reader.read_labels(root, "organs_sagittal"))
    for s in reader.SPLITS:
        np.testing.assert_array_equal(a.splits[s], reader.read_split(root, "organs_sagittal", s))
    c = tdata.load_dataset(root, "crc", image_size=SIZE, task="tissue class")
    assert c.images.shape == (54, 3, SIZE, SIZE) and c.channels == 3
    np.testing.assert_array_equal(c.images, _raw(root, "crc").transpose(0, 3, 1, 2))


def test_grayscale_matches_pil_luma(root):
    from PIL import Image

    g = tdata.load_dataset(root, "crc", image_size=SIZE, grayscale=True)
    assert g.images.shape == (54, 1, SIZE, SIZE) and g.channels == 1
    raw = _raw(root, "crc")
    for i in (0, 17, 53):
        np.testing.assert_array_equal(g.images[i, 0], np.asarray(Image.fromarray(raw[i]).convert("L")))


def test_resize_path(root):
    a = tdata.load_dataset(root, "organs_axial", image_size=48)
    assert a.images.shape == (66, 1, 48, 48) and a.images.dtype == np.uint8
    import torch
    import torch.nn.functional as F

    raw = torch.from_numpy(_raw(root, "organs_axial")[:, None]).float()
    ref = F.interpolate(raw, size=(48, 48), mode="bilinear", antialias=True).round().clamp(0, 255).byte().numpy()
    np.testing.assert_array_equal(a.images, ref)
    small = tdata.load_dataset(root, "crc", image_size=16)
    assert small.images.shape == (54, 3, 16, 16)
    # downsizing keeps the mean brightness (antialiased, not nearest)
    assert abs(small.images.mean() - _raw(root, "crc").mean()) < 2.0


def test_cache_hit_does_not_rewrite(root, tmp_path):
    cache = tmp_path / "cache"
    a = tdata.load_dataset(root, "organs_coronal", image_size=24, cache_dir=cache)
    assert a.cache_path is not None and a.cache_path.parent == cache
    files = sorted(os.listdir(cache))
    assert files == [a.cache_path.name] and "organs_coronal" in files[0] and "s24" in files[0]
    st = a.cache_path.stat()
    b = tdata.load_dataset(root, "organs_coronal", image_size=24, cache_dir=cache)
    assert isinstance(b.images, np.memmap)
    np.testing.assert_array_equal(a.images, b.images)
    st2 = b.cache_path.stat()
    assert (st2.st_mtime_ns, st2.st_ino) == (st.st_mtime_ns, st.st_ino)
    # no cache equals the cached pixels
    np.testing.assert_array_equal(tdata.load_dataset(root, "organs_coronal", image_size=24).images, b.images)
    # another size or colour mode gets its own file
    tdata.load_dataset(root, "crc", image_size=24, grayscale=True, cache_dir=cache)
    assert len(os.listdir(cache)) == 2


def test_cache_invalidated_when_hdf5_changes(root, tmp_path):
    r = tmp_path / "data"
    shutil.copytree(root / "organs_axial", r / "organs_axial")
    cache = tmp_path / "cache"
    a = tdata.load_dataset(r, "organs_axial", image_size=SIZE, cache_dir=cache)
    with h5py.File(r / "organs_axial" / "images.hdf5", "r+") as f:
        f["images"][0] = 255 - f["images"][0]
    b = tdata.load_dataset(r, "organs_axial", image_size=SIZE, cache_dir=cache)
    assert a.cache_path != b.cache_path
    np.testing.assert_array_equal(b.images[0, 0], 255 - np.asarray(a.images[0, 0]))


def test_cache_disk_check(root, tmp_path, monkeypatch):
    from collections import namedtuple

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(tdata.shutil, "disk_usage", lambda p: Usage(10**9, 10**9, 1000))
    cache = tmp_path / "full"
    with pytest.raises(BttuiError) as e:
        tdata.load_dataset(root, "organs_axial", image_size=SIZE, cache_dir=cache)
    assert str(cache) in str(e.value) and "GiB" in str(e.value)
    assert os.listdir(cache) == []


def test_split_policies(root):
    m = tdata.load_dataset(root, "organs_axial", image_size=SIZE, split_policy="mimeta")
    o = tdata.load_dataset(root, "organs_axial", image_size=SIZE, split_policy="original")
    r1 = tdata.load_dataset(root, "organs_axial", image_size=SIZE, split_policy="random")
    r2 = tdata.load_dataset(root, "organs_axial", image_size=SIZE, split_policy="random")
    assert not np.array_equal(m.splits["train"], o.splits["train"])
    for s in reader.SPLITS:
        np.testing.assert_array_equal(o.splits[s], reader.read_split(root, "organs_axial", s, "original"))
        np.testing.assert_array_equal(r1.splits[s], r2.splits[s])
        np.testing.assert_array_equal(r1.splits[s], reader.random_split(66, s))
    assert [len(r1.splits[s]) for s in reader.SPLITS] == [52, 6, 8]
    with pytest.raises(BttuiError, match="split policy"):
        tdata.load_dataset(root, "organs_axial", image_size=SIZE, split_policy="official")


def test_unknown_dataset_task_and_escape(root):
    with pytest.raises(BttuiError, match="did you mean 'crc'"):
        tdata.load_dataset(root, "crcc", image_size=SIZE)
    with pytest.raises(BttuiError, match="did you mean 'tissue class'"):
        tdata.load_dataset(root, "crc", task="tissue", image_size=SIZE)
    with pytest.raises(BttuiError, match="not allowed"):
        tdata.load_dataset(root, "../crc", image_size=SIZE)


def test_mimeta_cache_refreshed_for_new_datasets(tmp_path):
    """mimeta caches infos per data_path; a dataset written after a first load must still be found."""
    synth.synthesize(tmp_path, datasets=["organs_axial"], per_class=4, image_size=16)
    tdata.load_dataset(tmp_path, "organs_axial", image_size=16)
    synth.synthesize(tmp_path, datasets=["crc"], per_class=4, image_size=16)
    assert tdata.load_dataset(tmp_path, "crc", image_size=16).images.shape == (36, 3, 16, 16)


def test_label_subset_nested_stratified_deterministic():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 1000)
    labels[:3] = 4  # make sure the rare class exists
    train_idx = np.sort(rng.choice(1000, 600, replace=False))
    fracs = [0.005, 0.01, 0.1, 0.25, 0.3, 0.5, 1.0]
    subsets = [tdata.label_subset(labels, train_idx, f, seed=7) for f in fracs]
    for small, big in zip(subsets, subsets[1:]):
        assert set(small.tolist()) <= set(big.tolist())
    np.testing.assert_array_equal(subsets[-1], train_idx)
    counts = np.bincount(labels[train_idx], minlength=5)
    for f, sub in zip(fracs, subsets):
        assert np.all(np.diff(sub) > 0) and set(sub.tolist()) <= set(train_idx.tolist())
        got = np.bincount(labels[sub], minlength=5)
        expect = np.maximum(1, np.ceil(np.round(f * counts, 9))).astype(int)
        np.testing.assert_array_equal(got, expect)  # exact per-class counts, >= 1 each
    # 0.3 * 10 must not round up to 4 (float noise)
    ten = np.repeat(np.arange(2), 10)
    assert len(tdata.label_subset(ten, np.arange(20), 0.3, seed=0)) == 6
    np.testing.assert_array_equal(tdata.label_subset(labels, train_idx, 0.1, 7), subsets[2])
    assert not np.array_equal(tdata.label_subset(labels, train_idx, 0.1, 8), subsets[2])
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(BttuiError, match="fraction"):
            tdata.label_subset(labels, train_idx, bad, 0)


def test_concat_for_pretraining_excludes_test(root):
    views = [tdata.load_dataset(root, d, image_size=SIZE) for d in ("organs_axial", "organs_coronal", "organs_sagittal")]
    x = tdata.concat_for_pretraining(views)
    n_train = sum(len(v.splits["train"]) for v in views)
    assert x.shape == (n_train, 3, SIZE, SIZE) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], x[:, 2])  # grayscale replicated
    first = views[0]
    np.testing.assert_array_equal(x[: len(first.splits["train"]), 0], first.images[first.splits["train"], 0])
    # no test image anywhere in the concatenation
    test_imgs = {v.images[i].tobytes() for v in views for i in v.splits["test"]}
    assert not any(img[:1].tobytes() in test_imgs for img in x)
    tv = tdata.concat_for_pretraining(views, splits=("train", "val"))
    assert len(tv) == n_train + sum(len(v.splits["val"]) for v in views)
    with pytest.raises(BttuiError, match="test"):
        tdata.concat_for_pretraining(views, splits=("train", "test"))
    crc = tdata.load_dataset(root, "crc", image_size=SIZE)
    mixed = tdata.concat_for_pretraining([views[0], crc])
    assert mixed.shape[1] == 3
    leaky = tdata.DatasetArrays("x", "t", ["a"], views[0].images, views[0].labels,
                                {"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([1])}, 1)
    with pytest.raises(AssertionError):
        tdata.concat_for_pretraining([leaky])


def test_dataset_stats():
    x = np.zeros((4, 2, 3, 3), np.uint8)
    x[:, 1] = 255
    x[:2, 0] = 51
    mean, std = tdata.dataset_stats(x, batch=3)
    assert mean == pytest.approx([0.1, 1.0])
    assert std == pytest.approx([0.1, 0.0])
    ref = np.random.default_rng(0).integers(0, 256, (10, 3, 5, 5), dtype=np.uint8)
    m, s = tdata.dataset_stats(ref, batch=4)
    np.testing.assert_allclose(m, (ref / 255.0).mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(s, (ref / 255.0).std(axis=(0, 2, 3)))


def test_duplicate_id_directory_is_refused(root, tmp_path):
    r = tmp_path / "dup"
    shutil.copytree(root / "organs_axial", r / "organs_axial")
    shutil.copytree(root / "organs_axial", r / "zz_copy")  # mimeta would use whichever os.listdir gives last
    with pytest.warns(RuntimeWarning), pytest.raises(BttuiError, match="zz_copy"):
        tdata.load_dataset(r, "organs_axial", image_size=SIZE)
    assert any("zz_copy" in p and "does not match" in p for p in reader.check(r))


def test_broken_neighbour_gives_clear_error(root, tmp_path):
    r = tmp_path / "nb"
    shutil.copytree(root / "organs_axial", r / "organs_axial")
    (r / "crc").mkdir()
    (r / "crc" / "info.yaml").write_text("id: crc\ntasks: [unclosed\n")
    with pytest.raises(BttuiError, match="bttui data check"):
        tdata.load_dataset(r, "organs_axial", image_size=SIZE)


def test_label_count_mismatch_is_a_clear_error(root, tmp_path):
    r = tmp_path / "mm"
    shutil.copytree(root / "organs_axial", r / "organs_axial")
    lab = np.load(r / "organs_axial" / "task_labels" / "organ label.npy")
    np.save(r / "organs_axial" / "task_labels" / "organ label.npy", lab[:-1])
    with pytest.raises(BttuiError, match="66 images but task_labels/organ label.npy has 65 labels"):
        tdata.load_dataset(r, "organs_axial", image_size=SIZE)
