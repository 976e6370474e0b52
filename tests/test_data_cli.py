"""CLI tests for `bttui data ls | check | preview` on generated MIMeta data (CliRunner, plus an import check)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from bttui.cli import app
from bttui.cli import data_cmd
from bttui.data import reader, synth


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("mimeta")
    synth.synthesize(r, per_class=6, image_size=32, seed=2)
    return r


@pytest.fixture()
def runner(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "100")
    return CliRunner()


def invoke(runner, args):
    return runner.invoke(app, [str(a) for a in args])


def test_ls_table_and_json(runner, root):
    res = invoke(runner, ["data", "ls", root])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith("organs_axial "))
    assert row.split() == ["organs_axial", "66", "1x32x32", "organ", "label", "11", "33/11/22", "44/11/11", "52/6/8"]
    assert "crc / tissue class: 0 adipose, 1 background" in res.stdout
    res = invoke(runner, ["data", "ls", root, "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert [d["id"] for d in obj["datasets"]] == ["crc", "organs_axial", "organs_coronal", "organs_sagittal"]
    crc = obj["datasets"][0]
    assert crc["channels"] == 3 and crc["image_size"] == [32, 32] and crc["num_images"] == 54
    assert crc["tasks"][0]["classes"][5] == "smooth muscle" and crc["tasks"][0]["num_classes"] == 9
    assert crc["splits"]["mimeta"] == {"train": 27, "val": 9, "test": 18}
    for policy in reader.SPLIT_POLICIES:  # the light counts equal what the reader returns
        assert crc["splits"][policy] == {s: len(reader.read_split(root, "crc", s, policy)) for s in reader.SPLITS}
    assert obj["problems"] == []


def test_ls_skips_a_broken_dataset_and_missing_root(runner, root, tmp_path):
    r = tmp_path / "r"
    shutil.copytree(root / "organs_axial", r / "organs_axial")
    (r / "bad").mkdir()
    (r / "bad" / "info.yaml").write_text("id: bad\ntasks: [unclosed\n")
    res = invoke(runner, ["data", "ls", r])
    assert res.exit_code == 0
    assert "organs_axial" in res.stdout and "skipped:" in res.stderr and "bad/info.yaml" in res.stderr
    res = invoke(runner, ["data", "ls", tmp_path / "absent"])
    assert res.exit_code == 2 and "does not exist or is not a directory" in res.stderr


def test_ls_imports_no_torch_mimeta_or_h5py(root):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bttui.cli import app\n"
        f"r = CliRunner().invoke(app, ['data', 'ls', {str(root)!r}, '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('torch', 'mimeta', 'h5py', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_check_ok_and_broken(runner, root, tmp_path):
    res = invoke(runner, ["data", "check", root])
    assert res.exit_code == 0 and "ok: 4 datasets" in res.stdout
    b = tmp_path / "b"
    shutil.copytree(root, b)
    lab = np.load(b / "organs_coronal" / "task_labels" / "organ label.npy")
    lab[0] = 40
    np.save(b / "organs_coronal" / "task_labels" / "organ label.npy", lab)
    (b / "organs_sagittal" / "splits" / "val.txt").write_text("")
    h5 = b / "crc" / "images.hdf5"
    h5.write_bytes(h5.read_bytes()[:500])
    res = invoke(runner, ["data", "check", b])
    assert res.exit_code == 2
    assert "3 problems found" in res.stderr and "bttui: error:" in res.stderr
    numbered = [ln for ln in res.stdout.splitlines() if ln.strip()[:2] in ("1.", "2.", "3.")]
    assert len(numbered) == 3, res.stdout
    text = " ".join(res.stdout.split())
    assert "organs_coronal/task_labels/organ label.npy: 1 label(s) outside the 11 classes" in text
    assert "organs_sagittal/splits/val.txt: empty split" in text
    assert "crc/images.hdf5: unreadable HDF5 file" in text
    assert text.count("Fix:") == 3
    # one dataset only; a clean one passes
    res = invoke(runner, ["data", "check", b, "organs_sagittal"])
    assert res.exit_code == 2 and "1 problem found" in res.stderr and "organs_coronal" not in res.stdout
    assert invoke(runner, ["data", "check", b, "organs_axial"]).exit_code == 0
    res = invoke(runner, ["data", "check", b, "organs_sagital", "--json"])
    obj = json.loads(res.stdout)
    assert res.exit_code == 2 and not obj["ok"] and "did you mean 'organs_sagittal'" in obj["problems"][0]


def test_preview_draws_images_and_histogram(runner, root):
    res = invoke(runner, ["data", "preview", root, "organs_axial", "--per-class", 2, "--width", 8])
    assert res.exit_code == 0, res.output
    out = res.stdout
    for name in synth.ORGAN_CLASSES:
        assert name in out
    assert " 0 heart  2 of 3 in train" in out
    # 11 classes x 2 images x 8 columns x 4 text rows of half blocks
    assert out.count("▀") == 11 * 2 * 8 * 4
    hist = [ln for ln in out.splitlines() if ln.split()[:2] == ["3", "liver"]][-1]  # the histogram row
    assert hist.split()[2:5] == ["3", "1", "2"]
    assert next(ln for ln in out.splitlines() if ln.split()[:1] == ["total"]).split()[1:] == ["33", "11", "22"]
    res = invoke(runner, ["data", "preview", root, "crc", "--per-class", 0, "--policy", "random"])
    assert res.exit_code == 0 and "▀" not in res.stdout and "random splits" in res.stdout
    res = invoke(runner, ["data", "preview", root, "crc", "--task", "tissue"])
    assert res.exit_code == 2 and "did you mean 'tissue class'" in res.stderr


def test_halfblock_colours():
    gray = np.zeros((4, 4), np.uint8)
    gray[:2] = 200  # upper half light, lower half dark
    lines = data_cmd.halfblock_lines(gray, width=4)
    assert len(lines) == 2 and all(ln.plain == "▀" * 4 for ln in lines)
    top = lines[0].spans[0].style
    assert top.color.triplet == (200, 200, 200) and top.bgcolor.triplet == (200, 200, 200)
    bottom = lines[1].spans[0].style
    assert bottom.color.triplet == (0, 0, 0)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, :, 0] = 255  # red row over a blue row
    rgb[1, :, 2] = 255
    style = data_cmd.halfblock_lines(rgb, width=2)[0].spans[0].style
    assert style.color.triplet == (255, 0, 0) and style.bgcolor.triplet == (0, 0, 255)


def test_area_resize_averages_blocks():
    x = np.arange(36, dtype=np.uint8).reshape(6, 6)
    y = data_cmd.area_resize(x, 3)
    assert y.shape == (3, 3, 1)
    assert y[0, 0, 0] == pytest.approx(x[:2, :2].mean()) and y[2, 1, 0] == pytest.approx(x[4:, 2:4].mean())
    assert data_cmd.area_resize(x, 50).shape == (6, 6, 1)  # never upsampled
