"""Hostile or broken input: fuzzed configs through `bttui run`, corrupted MIMeta datasets through `bttui data check`
and the trainer's loader. Always a clear one-paragraph error with exit 2, never a traceback or a half-made run."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import faultkit
from bttui.config.load import toml_string, toml_value
from faultkit import FIGURES

FUZZ = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


def _schema_keys() -> list[str]:
    from bttui.config.docs import field_docs

    return [key for key, *_ in field_docs()]


SCHEMA_KEYS = _schema_keys()

# ----------------------------------------------------------------- TOML writing (for generated documents)
# Values and quoted keys are written by the library's own TOML writer (the one behind config_to_toml).


def toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii() else toml_string(key)


def toml_document(pairs: dict) -> str:
    """Dotted keys written as tables ([section] key = value) the way users write configs."""
    top, sections = [], {}
    for key, value in pairs.items():
        if "." in key:
            section, _, leaf = key.partition(".")
            sections.setdefault(section, []).append(f"{toml_key(leaf)} = {toml_value(value)}")
        else:
            top.append(f"{toml_key(key)} = {toml_value(value)}")
    text = "\n".join(top) + "\n"
    for section, lines in sections.items():
        text += f"\n[{toml_key(section)}]\n" + "\n".join(lines) + "\n"
    return text


scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**6 + 1, 8, 32]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "../../etc", "/", "checkpoint:/etc/passwd", "run:../x", "organs_axial", "a\x00b",
                     "[bold red]x[/]", "\x1b[31mred", "random", "linear", "surgical:layer9", "barlow_twins@epoch=-1"]),
    st.booleans(),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=5), scalars, max_size=2))
keys = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(min_size=1, max_size=12),
                 st.sampled_from(["pretrain", "finetune.nope", "data", "Pretrain.epochs", "health.on_collapse"]))


def _base_config(root: Path) -> dict:
    return {"name": "fuzz", "data.root": str(root), "data.image_size": 32, "pretrain.datasets": [faultkit.DATASET],
            "pretrain.epochs": 1, "pretrain.batch_size": 8, "finetune.datasets": [faultkit.DATASET],
            "finetune.init": ["random"], "finetune.strategy": ["linear"], "finetune.epochs": 1}


documents = st.one_of(
    st.dictionaries(keys, values, max_size=6).map(lambda d: ("pairs", d)),
    st.text(max_size=300).map(lambda t: ("text", t)),
    st.binary(max_size=200).map(lambda b: ("bytes", b)),
    st.tuples(st.sampled_from(SCHEMA_KEYS), values).map(lambda kv: ("mutate", kv)),
)


@pytest.fixture()
def cli_runner(monkeypatch):
    """The real CLI in-process; a config that is valid gets its run created but no trainer started."""
    from bttui.cli import run_cmd

    monkeypatch.setattr(run_cmd, "wait_and_launch", lambda *a, **k: None)
    monkeypatch.setattr(run_cmd, "start_detached", lambda *a, **k: 0)
    return CliRunner()


def _entries(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir() if p.name != ".bttui") if store.exists() else []


@FUZZ
@given(doc=documents)
def test_fuzzed_configs_through_bttui_run(cli_runner, mimeta_root, doc):
    from bttui.cli.app import app

    kind, payload = doc
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config, store = tmp / "fuzz.toml", tmp / "store"
        if kind == "bytes":
            config.write_bytes(payload)
        elif kind == "text":
            config.write_text(payload, encoding="utf-8", errors="surrogatepass")
        elif kind == "pairs":
            config.write_text(toml_document(payload), encoding="utf-8", errors="surrogatepass")
        else:  # one key of a good config replaced by a random value
            key, value = payload
            config.write_text(toml_document({**_base_config(mimeta_root), key: value}), encoding="utf-8",
                              errors="surrogatepass")
        result = cli_runner.invoke(app, ["--store", str(store), "run", str(config)])
        FIGURES["fuzz_cases"] += 1
        ok = _judge_cli(result, store, allow_success=True)
        FIGURES["fuzz_crashes"] += int(not ok)


def _judge_cli(result, store: Path | None, *, allow_success: bool) -> bool:
    """Exit 2 with one 'bttui: error:' paragraph and nothing left behind, or (when allowed) a clean success."""
    output = result.output + (result.stderr or "")
    assert "Traceback" not in output, output
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), repr(exc)
    if result.exit_code == 0 and allow_success:
        if store is not None:
            assert len(_entries(store)) == 1 and not _entries(store)[0].startswith(".tmp-")
        return True
    assert result.exit_code == 2, output
    err = result.stderr.strip()
    assert err.startswith("bttui: error:") and "\n\n" not in err, err
    if store is not None:
        assert _entries(store) == [], _entries(store)
    return True


def test_config_fuzz_smoke_in_a_real_process(tmp_path, mimeta_root):
    """The same judgement on a real `bttui run` process for a few nasty documents."""
    env = faultkit.base_env(tmp_path)
    store = tmp_path / "store"
    for i, text in enumerate([
        "pretrain.epochs = 1e400\n", "[pretrain]\nepochs = 99999999999999999999999\n", "name = \"\\u0000\"\n",
        "[finetune]\ninit = [\"checkpoint:../../../../etc/shadow\"]\n", "\ufeff[data]\nroot = 5\n", "x" * 100_000,
        f"[data]\nroot = \"{mimeta_root}\"\n[pretrain]\ndatasets = [\"../organs_axial\"]\n",
    ]):
        config = tmp_path / f"nasty{i}.toml"
        config.write_text(text)
        proc = faultkit.bttui(["--store", store, "run", config], env)
        FIGURES["fuzz_cases"] += 1
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (text[:80], proc.stderr[-2000:])
        assert proc.stderr.startswith("bttui: error:") and "\n\n" not in proc.stderr.strip()
        assert _entries(store) == []


# ----------------------------------------------------------------- MIMeta reader


CORRUPTIONS = ["truncate_h5", "random_h5", "info_bytes", "info_text", "info_edit", "labels_length", "labels_dtype",
               "labels_bytes", "images_shape", "images_no_dataset", "split_garbage", "split_out_of_range"]


def corrupt(ds: Path, kind: str, data: st.DataObject) -> None:
    import h5py
    import yaml

    h5 = ds / "images.hdf5"
    labels = next((ds / "task_labels").glob("*.npy"))
    if kind == "truncate_h5":
        size = h5.stat().st_size
        keep = data.draw(st.integers(0, size - 1), label="keep")
        with open(h5, "r+b") as fh:
            fh.truncate(keep)
    elif kind == "random_h5":
        h5.write_bytes(data.draw(st.binary(max_size=4096), label="h5 bytes"))
    elif kind == "info_bytes":
        (ds / "info.yaml").write_bytes(data.draw(st.binary(max_size=300), label="info bytes"))
    elif kind == "info_text":
        (ds / "info.yaml").write_text(data.draw(st.text(max_size=300), label="info text"), errors="surrogatepass")
    elif kind == "info_edit":
        info = yaml.safe_load((ds / "info.yaml").read_text())
        key = data.draw(st.sampled_from(sorted(info) + ["tasks.0.labels", "tasks.0.num_classes", "input_size"]))
        value = data.draw(st.one_of(st.none(), st.integers(-5, 10**12), st.text(max_size=10),
                                    st.lists(st.integers(-3, 3), max_size=4)), label="value")
        if key.startswith("tasks.0."):
            info["tasks"][0][key.split(".")[-1]] = value
        elif data.draw(st.booleans(), label="delete"):
            del info[key]
        else:
            info[key] = value
        (ds / "info.yaml").write_text(yaml.safe_dump(info))
    elif kind == "labels_length":
        arr = np.load(labels)
        delta = data.draw(st.sampled_from([-len(arr), -3, -1, 1, 5]), label="delta")
        np.save(labels, np.resize(arr, len(arr) + delta))
    elif kind == "labels_dtype":
        arr = np.load(labels)
        bad = data.draw(st.sampled_from(["float", "str", "2d", "negative", "too_big"]), label="labels")
        new = {"float": arr.astype(np.float32) + 0.5, "str": arr.astype(str), "2d": np.stack([arr, arr], 1),
               "negative": arr - 100, "too_big": arr + 1000}[bad]
        np.save(labels, new)
    elif kind == "labels_bytes":
        labels.write_bytes(data.draw(st.binary(max_size=200), label="labels bytes"))
    elif kind == "images_shape":
        with h5py.File(h5, "r") as f:
            images = f["images"][()]
        shape = data.draw(st.sampled_from(["2d", "5ch", "more", "fewer", "float", "empty"]), label="shape")
        new = {"2d": images.reshape(len(images), -1), "5ch": np.repeat(images[..., None], 5, -1),
               "more": np.concatenate([images, images[:7]]), "fewer": images[:-5],
               "float": images.astype(np.float64) / 255, "empty": images[:0]}[shape]
        h5.unlink()
        with h5py.File(h5, "w") as f:
            f.create_dataset("images", data=new)
    elif kind == "images_no_dataset":
        h5.unlink()
        with h5py.File(h5, "w") as f:
            f.create_dataset("pixels", data=np.zeros((3, 4, 4), np.uint8))
    elif kind == "split_garbage":
        (ds / "splits" / "train.txt").write_text(data.draw(st.text(min_size=1, max_size=200), label="split"),
                                                 errors="surrogatepass")
    elif kind == "split_out_of_range":
        with open(ds / "splits" / "train.txt", "a") as fh:
            fh.write("images/999999.tiff\n")


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(kind=st.sampled_from(CORRUPTIONS), data=st.data())
def test_corrupted_datasets_give_clear_errors(mimeta_root, kind, data):
    from bttui.cli.app import app
    from bttui.errors import BttuiError
    from bttui.train.data import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mimeta"
        shutil.copytree(mimeta_root / faultkit.DATASET, root / faultkit.DATASET)
        corrupt(root / faultkit.DATASET, kind, data)
        FIGURES["fuzz_cases"] += 1
        result = CliRunner().invoke(app, ["data", "check", str(root)])
        _judge_cli(result, None, allow_success=True)
        try:
            arrays = load_dataset(root, faultkit.DATASET, image_size=32)
        except BttuiError as err:
            assert "Traceback" not in str(err) and str(err).strip()
            loader_ok = False
        else:
            loader_ok = True
            assert arrays.images.shape[0] == len(arrays.labels)
        # a dataset the loader refuses is one `data check` flags
        assert loader_ok or result.exit_code == 2, (kind, result.output)


def test_data_check_in_a_real_process(tmp_path, mimeta_root):
    root = tmp_path / "mimeta"
    shutil.copytree(mimeta_root / faultkit.DATASET, root / faultkit.DATASET)
    h5 = root / faultkit.DATASET / "images.hdf5"
    with open(h5, "r+b") as fh:
        fh.truncate(h5.stat().st_size // 2)
    (root / faultkit.DATASET / "info.yaml").write_bytes(os.urandom(64))
    proc = faultkit.bttui(["data", "check", root], faultkit.base_env(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "info.yaml" in proc.stdout + proc.stderr
    assert proc.stderr.startswith("bttui: error:")
