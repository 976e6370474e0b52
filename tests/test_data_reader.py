"""Tests for bttui.data.reader: lookups, split policies, path safety and check() on broken data."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bttui.data import reader, synth
from bttui.errors import BttuiError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("mimeta")
    synth.synthesize(r, per_class=6, image_size=32, seed=3)
    return r


def test_list_and_info(root):
    infos = reader.list_datasets(root)
    assert [i.id for i in infos] == ["crc", "organs_axial", "organs_coronal", "organs_sagittal"]
    crc = reader.read_info(root, "crc")
    assert crc.input_size == [3, 32, 32] and crc.channels == 3
    assert crc.tasks[0].name == "tissue class" and crc.tasks[0].num_classes == 9
    assert crc.tasks[0].labels[5] == "smooth muscle"
    assert crc.path == root / "crc"
    assert crc.splits_num_samples == {"train": 27, "val": 9, "test": 18}  # per class of 6: 3/1/2
    assert reader.check(root) == []


def test_unknown_ids_and_tasks_suggest(root):
    with pytest.raises(BttuiError) as e:
        reader.read_info(root, "organs_sagital")
    msg = str(e.value)
    assert "did you mean 'organs_sagittal'" in msg and "crc" in msg and "organs_axial" in msg
    with pytest.raises(BttuiError, match="did you mean 'organ label'"):
        reader.read_labels(root, "organs_axial", "organ labels")
    with pytest.raises(BttuiError, match="valid policies"):
        reader.read_split(root, "crc", "train", policy="predefined")
    with pytest.raises(BttuiError, match="did you mean 'val'"):
        reader.read_split(root, "crc", "vall")
    with pytest.raises(BttuiError, match="does not exist"):
        reader.list_datasets(root / "nope")


@pytest.mark.parametrize("bad", ["..", "../organs_axial", "/etc", "a/b", "x\0y", "", ".", "~root", "a\\b"])
def test_path_escape_refused(root, bad):
    with pytest.raises(BttuiError, match="not (allowed|valid)"):
        reader.read_info(root, bad)
    with pytest.raises(BttuiError):
        reader.read_split(root, bad, "train")
    problems = reader.check(root, bad)
    assert len(problems) == 1 and ("not allowed" in problems[0] or "not valid" in problems[0])


def test_random_split_rule(root):
    n = reader.image_shape(root, "organs_axial")[0]
    assert n == 66
    parts = {s: reader.read_split(root, "organs_axial", s, policy="random") for s in reader.SPLITS}
    assert [len(parts[s]) for s in reader.SPLITS] == [52, 6, 8]  # int(0.8*66), int(0.1*66), rest
    perm = np.random.default_rng(42).permutation(n)
    np.testing.assert_array_equal(parts["train"], np.sort(perm[:52]))
    np.testing.assert_array_equal(parts["test"], np.sort(perm[58:]))
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(n))
    # deterministic and the 80/10/10 shape holds at scale
    np.testing.assert_array_equal(reader.random_split(1000, "val"), reader.random_split(1000, "val"))
    assert [len(reader.random_split(1000, s)) for s in reader.SPLITS] == [800, 100, 100]
    for s in reader.SPLITS:
        assert np.all(np.diff(parts[s]) > 0)


def test_split_line_parsing_matches_mimeta():
    assert reader.parse_split_lines(["images/000123.tiff\n", "images/7.tiff", "  \n", "x/y/000042.png"]) == [123, 7, 42]


def _broken_copy(root, tmp_path):
    b = tmp_path / "broken"
    shutil.copytree(root, b)
    # 1. truncated hdf5
    h5 = b / "organs_axial" / "images.hdf5"
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 3])
    # 2. wrong label length + label out of range
    lab = np.load(b / "organs_coronal" / "task_labels" / "organ label.npy")
    bad = lab[:-5].copy()
    bad[0] = 99
    np.save(b / "organs_coronal" / "task_labels" / "organ label.npy", bad)
    # 3. out-of-range split index and a duplicate across splits
    with open(b / "organs_sagittal" / "splits" / "test.txt", "a") as fh:
        fh.write("images/009999.tiff\n")
    val0 = (b / "organs_sagittal" / "splits" / "val.txt").read_text().splitlines()[0]
    with open(b / "organs_sagittal" / "splits" / "train.txt", "a") as fh:
        fh.write(val0 + "\n")
    (b / "organs_sagittal" / "original_splits" / "val.txt").write_text("")
    # 4. bad info.yaml (malformed YAML)
    (b / "crc" / "info.yaml").write_text("id: crc\ntasks: [unclosed\n")
    return b


def test_check_reports_every_problem(root, tmp_path):
    b = _broken_copy(root, tmp_path)
    problems = reader.check(b)
    text = "\n".join(problems)
    assert any("organs_axial" in p and "images.hdf5" in p and "unreadable" in p for p in problems), text
    assert any("organs_coronal" in p and "61 labels but images.hdf5 holds 66" in p for p in problems), text
    assert any("organs_coronal" in p and "outside the 11 classes" in p for p in problems), text
    assert any("organs_sagittal" in p and "test.txt" in p and "out of range" in p and "9999" in p for p in problems), text
    assert any("organs_sagittal" in p and "val.txt: index" in p and "also in splits/train.txt" in p for p in problems), text
    assert any("organs_sagittal" in p and "original_splits/val.txt" in p and "empty" in p for p in problems), text
    assert any("crc" in p and "info.yaml" in p and "malformed" in p for p in problems), text
    assert len(problems) >= 7
    # one dataset at a time gives just its own problems
    only = reader.check(b, "organs_coronal")
    assert only and all("organs_coronal" in p for p in only)
    assert reader.check(b, "organs_axial") != [] and reader.check(root, "organs_axial") == []


def test_check_info_semantics(root, tmp_path):
    b = tmp_path / "d"
    shutil.copytree(root / "organs_axial", b / "organs_axial")
    info = (b / "organs_axial" / "info.yaml").read_text()
    info = info.replace("id: organs_axial", "id: organs_ax").replace("MULTICLASS_CLASSIFICATION", "MULTICLASS")
    (b / "organs_axial" / "info.yaml").write_text(info)
    (b / "organs_axial" / "task_labels" / "organ label.npy").unlink()
    problems = reader.check(b)
    text = "\n".join(problems)
    assert "does not match the directory name" in text
    assert "task_target must be one of" in text
    with pytest.raises(BttuiError, match="task_target"):
        reader.read_info(b, "organs_axial")
    # with a valid info the missing label file is reported
    info = info.replace("MULTICLASS", "MULTICLASS_CLASSIFICATION")
    (b / "organs_axial" / "info.yaml").write_text(info)
    assert any("missing label file" in p for p in reader.check(b))
    assert "does not exist or is not a directory. Fix:" in reader.check(tmp_path / "absent")[0]
    (b / "organs_axial" / "images.hdf5").unlink()
    assert any("images.hdf5: missing" in p for p in reader.check(b))
