"""Security: pickled payloads are refused, names cannot escape the store or data root, SQL takes parameters only,
hostile text is shown literally, and store files honour the umask (tests/faults/test_kill_points.py walks a run)."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
from pathlib import Path

import pytest

import faultkit

BTTUI = Path(faultkit.REPO) / "bttui"


class Payload:
    """Unpickling this runs a shell command that creates `marker` (the attack a weights file can carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payload_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    import torch

    marker = tmp_path / "PWNED"
    as_torch = tmp_path / "evil_torch.pt"  # torch.save's zip format with the payload in data.pkl
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, as_torch)
    as_pickle = tmp_path / "evil_pickle.pt"  # a bare pickle (torch's legacy format)
    as_pickle.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    assert not marker.exists()
    return marker, [as_torch, as_pickle]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_checkpoint_loaders_refuse_pickled_code(tmp_path):
    from bttui.errors import BttuiError
    from bttui.train.finetune import load_backbone_weights
    from bttui.train.pretrain import find_resume_checkpoint, load_checkpoint

    marker, files = _payload_files(tmp_path)
    for path in files:
        with pytest.raises(BttuiError) as err:
            load_backbone_weights(path, f"checkpoint:{path}")
        assert str(path) in str(err.value) and "tensors only" in str(err.value)
        with pytest.raises(Exception):
            load_checkpoint(path)
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    files[0].rename(ckpts / "pretrain_epoch0001.pt")
    assert find_resume_checkpoint(ckpts) is None  # a resume skips it rather than running it
    assert not marker.exists()


def test_a_run_given_a_pickled_checkpoint_fails_without_running_it(tmp_path, mimeta_root):
    marker, files = _payload_files(tmp_path)
    toml = faultkit.tiny_toml(mimeta_root, init=f'["checkpoint:{files[0]}"]')
    toml = toml.split("[pretrain]")[0] + "[resources]" + toml.split("[resources]")[1]  # fine-tuning only
    paths = faultkit.create_run(tmp_path / "store", toml, tmp_path / "cfg")
    rc = faultkit.run_trainer(paths, faultkit.base_env(tmp_path))
    from bttui.runs.store import Store

    record = Store(tmp_path / "store").get(paths.dir.name)
    assert rc == 1 and record.status == "failed"
    assert str(files[0]) in record.reason and "tensors only" in record.reason, record.reason
    assert "Weights only load failed" in record.reason or "weights_only" in record.reason
    assert not marker.exists()


def test_every_torch_load_is_weights_only():
    calls = []
    for path in BTTUI.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{path.relative_to(BTTUI)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the scan is broken"
    assert [c for c, safe in calls if not safe] == []


# ----------------------------------------------------------------- names that try to escape


HOSTILE_NAMES = ["../../escape", "/etc/passwd", "a\x00b", "..", ".", "./.bttui", "x/../../y", "\\..\\..\\w"]


def test_run_names_stay_inside_the_store(tmp_path, mimeta_root):
    from bttui.config import loads_config
    from bttui.errors import BttuiError
    from bttui.runs.store import Store

    store = Store(tmp_path / "store")
    made = 0
    for name in HOSTILE_NAMES:
        cfg = loads_config(faultkit.tiny_toml(mimeta_root))
        cfg.name = name
        try:
            paths = store.create_run(cfg)
        except BttuiError:
            continue  # refused outright (NUL): as good as contained
        made += 1
        assert paths.dir.parent == store.root and paths.dir.resolve().parent == store.root.resolve()
        assert re.fullmatch(r"\d{8}-\d{6}-[a-z0-9-]+-[0-9a-f]{4}", paths.dir.name), paths.dir.name
    assert made >= len(HOSTILE_NAMES) - 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bttui-settings.toml", "store"]  # nothing landed beside it
    assert len(list(store.root.iterdir())) == made
    for ref in HOSTILE_NAMES + [str(tmp_path), "../store"]:
        with pytest.raises(BttuiError):
            store.get(ref)
        try:  # by name it may find the run of that name: one inside the store
            record = store.resolve(ref)
        except BttuiError:
            continue
        assert record.paths.dir.parent == store.root and record.name == ref, ref


def test_cli_refuses_run_references_outside_the_store(tmp_path):
    env = faultkit.base_env(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "run.json").write_text(json.dumps({"id": "victim", "name": "victim"}))
    for ref in ["../victim", str(victim), "a\x01b"]:
        proc = faultkit.bttui(["--store", tmp_path / "store", "show", ref], env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("bttui: error:")


def test_dataset_ids_stay_inside_the_data_root(tmp_path, mimeta_root):
    from bttui.config import loads_config
    from bttui.data import reader
    from bttui.errors import BttuiError

    secret = tmp_path / "outside"
    (secret / "tasks").mkdir(parents=True)
    (secret / "info.yaml").write_text("id: outside\n")
    root = mimeta_root
    for ds in ["../outside", str(secret), "a\x00b", "..", ".", "organs_sagittal/../../outside", ""]:
        with pytest.raises(BttuiError):
            reader.validate_dataset_id(ds)
        with pytest.raises(BttuiError):
            reader.read_info(root, ds)
        with pytest.raises(BttuiError):  # the config names the key before anything reads the disk
            loads_config(faultkit.tiny_toml(root).replace(f'datasets = ["{faultkit.DATASET}"]\nbatch_size',
                                                          f"datasets = [{json.dumps(ds)}]\nbatch_size"))


# ----------------------------------------------------------------- SQL


SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|PRAGMA|WHERE|VALUES|REPLACE|ALTER)\b")


def _safe_interpolation(node: ast.expr) -> bool:
    """Module constants (ALL_CAPS) and "?" placeholder lists are the only values allowed inside SQL text."""
    if isinstance(node, ast.Name):
        return node.id.isupper()
    if isinstance(node, ast.Attribute):
        return node.attr.isupper()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join" \
            and isinstance(node.func.value, ast.Constant) and len(node.args) == 1:
        arg = node.args[0]
        if isinstance(arg, (ast.GeneratorExp, ast.ListComp)):
            return isinstance(arg.elt, ast.Constant) and arg.elt.value == "?"
        return _safe_interpolation(arg)
    return False


def sql_problems(source: str, filename: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if SQL_WORDS.search(literal):
                for value in node.values:
                    if isinstance(value, ast.FormattedValue) and not _safe_interpolation(value.value):
                        problems.append(f"{filename}:{node.lineno}: f-string SQL interpolates {ast.unparse(value.value)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("execute", "executemany", "executescript") and node.args:
            first = node.args[0]
            if isinstance(first, ast.BinOp) and isinstance(first.op, (ast.Mod, ast.Add)):
                problems.append(f"{filename}:{node.lineno}: SQL built with {type(first.op).__name__}")
            if isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and first.func.attr == "format":
                problems.append(f"{filename}:{node.lineno}: SQL built with str.format")
    return problems


def test_sql_uses_parameters_only():
    scanned, problems = 0, []
    for path in BTTUI.rglob("*.py"):
        text = path.read_text()
        if "sqlite3" not in text:
            continue
        scanned += 1
        problems += sql_problems(text, str(path.relative_to(BTTUI)))
    assert scanned >= 2  # index.py and queue.py at least
    assert problems == []


def test_the_sql_scan_catches_injection():
    bad = 'def f(conn, name):\n    conn.execute(f"SELECT * FROM runs WHERE name = \'{name}\'")\n' \
          '    conn.execute("DELETE FROM runs WHERE id = %s" % name)\n' \
          '    conn.execute("SELECT {}".format(name))\n'
    assert len(sql_problems(bad, "bad.py")) == 3
    good = 'def f(conn, ids):\n    conn.execute(f"SELECT {COLS} FROM runs WHERE id IN ({\', \'.join(\'?\' for _ in ids)})", ids)\n'
    assert sql_problems(good, "good.py") == []


# ----------------------------------------------------------------- hostile text shown literally


MARKUP = "[bold red]BOLD[/bold red][link=http://evil.example]click[/link]"
ESCAPES = "\x1b[31mRED\x1b[0m\x1b]0;owned\x07\x1b[2J"


def _hostile_run(store: Path, mimeta_root: Path) -> str:
    from bttui.config import loads_config
    from bttui.runs.atomic import read_json, write_json_atomic
    from bttui.runs.events import EventWriter
    from bttui.runs.store import Store

    paths = Store(store).create_run(loads_config(faultkit.tiny_toml(mimeta_root, name="hostile")))
    run = read_json(paths.run_json)
    run["name"] = f"{MARKUP}{ESCAPES}"
    write_json_atomic(paths.run_json, run)
    status = read_json(paths.status)
    status.update(status="failed", reason=f"reason {MARKUP} {ESCAPES}", ended=1.0)
    write_json_atomic(paths.status, status)
    classes = [f"cls{MARKUP}", f"esc{ESCAPES}"]
    item = {"cell": f"{faultkit.DATASET}/random/linear/1/s0", "dataset": faultkit.DATASET, "task": "organ label",
            "init": "random", "strategy": "linear", "label_fraction": 1.0, "n_train": 4, "seed": 0,
            "status": "completed", "test_accuracy": 0.5, "per_class_accuracy": [0.5, 0.5],
            "confusion_matrix": [[1, 1], [1, 1]], "class_names": classes, "lineage": {"backbone_from": None}}
    write_json_atomic(paths.summary, {"pretrain": None, "results": [item]})
    with EventWriter(paths.events) as events:
        events.write("log", level="error", message=f"log line {MARKUP} {ESCAPES}")
    with open(paths.log, "a") as log:  # what a trainer prints about a hostile class name lands here
        log.write(f"[error] log line {MARKUP} {ESCAPES}\n")
    return paths.dir.name


def test_markup_and_escapes_are_shown_literally(tmp_path, mimeta_root):
    store = tmp_path / "store"
    run_id = _hostile_run(store, mimeta_root)
    env = faultkit.base_env(tmp_path)
    outputs = {}
    for args in (["ls"], ["ls", "--all"], ["show", run_id]):
        proc = faultkit.bttui(["--store", store, *args], env)
        assert proc.returncode == 0, (args, proc.stderr)
        outputs[" ".join(args)] = proc.stdout + proc.stderr
    for what, text in outputs.items():
        assert "\x1b" not in text and "\x07" not in text, (what, text)  # no escape sequence reaches the terminal
    assert "[bold red]BOLD[/bold red]" in outputs[f"show {run_id}"]  # markup printed as typed, not interpreted
    assert "\\e[31mRED" in outputs[f"show {run_id}"]  # escapes made visible
    assert "reason [bold red]BOLD" in outputs[f"show {run_id}"]
    assert f"cls{MARKUP[:10]}" in outputs[f"show {run_id}"]  # class names in the results / confusion matrix
    assert "[bold red]BOLD" in outputs["ls --all"]


def test_logs_show_escapes_literally(tmp_path, mimeta_root):
    store = tmp_path / "store"
    run_id = _hostile_run(store, mimeta_root)
    proc = faultkit.bttui(["--store", store, "logs", run_id], faultkit.base_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "log line [bold red]BOLD[/bold red]" in proc.stdout
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout


def test_json_output_keeps_hostile_text_intact(tmp_path, mimeta_root):
    """Machine-readable output is data, not terminal text: the exact strings round-trip."""
    store = tmp_path / "store"
    run_id = _hostile_run(store, mimeta_root)
    proc = faultkit.bttui(["--store", store, "show", run_id, "--json"], faultkit.base_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout  # escaped by JSON itself
    run = json.loads(proc.stdout)
    assert run["name"] == f"{MARKUP}{ESCAPES}"
