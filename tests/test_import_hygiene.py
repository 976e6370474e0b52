"""The faces and the store never pay for heavy libraries: importing them in a fresh interpreter loads none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "textual", "mimeta", "umap", "sklearn", "plotext")
LIGHT_PACKAGES = ("bttui.cli", "bttui.config", "bttui.runs", "bttui.data", "bttui.render")
# Every module of the light packages: a heavy import at module level in any of them is a bug,
# even in one the CLI does not import at start-up.
REPO = Path(__file__).resolve().parents[1]


def _light_modules() -> list[str]:
    names = []
    for package in LIGHT_PACKAGES:
        folder = REPO / Path(*package.split("."))
        for path in sorted(folder.glob("*.py")):
            names.append(package if path.stem == "__init__" else f"{package}.{path.stem}")
    return names


def _loaded_after(modules: list[str]) -> dict[str, list[str]]:
    code = (
        "import importlib, json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "out = {}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    out[name] = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", LIGHT_PACKAGES)
def test_package_import_loads_no_heavy_library(package):
    loaded = _loaded_after([package])[package]
    assert loaded == [], f"importing {package} loaded {loaded}"


def test_every_light_module_is_free_of_heavy_imports():
    modules = _light_modules()
    assert "bttui.cli.app" in modules and "bttui.render.confusion" in modules
    loaded = _loaded_after(modules)
    offenders = {name: mods for name, mods in loaded.items() if mods}
    # The first offender is the module that pulled the library in.
    assert not offenders, f"heavy libraries loaded: {offenders}"


def test_bttui_help_exits_0():
    exe = shutil.which("bttui", path=str(Path(sys.executable).parent)) or shutil.which("bttui")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "bttui", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "100"}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "ls", "show", "data", "index", "config"):
        assert command in proc.stdout


def test_python_m_bttui_help_exits_0():
    proc = subprocess.run([sys.executable, "-m", "bttui", "ls", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "--json" in proc.stdout and "--store" in proc.stdout
