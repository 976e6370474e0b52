"""The README stays true: its config reference matches the schema and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from bttui.config.docs import check_readme

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_config_reference_is_in_sync_with_schema():
    assert check_readme(README), "run: python -m bttui.config.docs --write README.md"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    blocks = _bash_blocks(README.split("## Quick start", 1)[1].split("\n## ", 1)[0])
    assert len(blocks) == 2
    install_and_run, install_and_test = (b.strip() for b in blocks)
    assert "\n" not in install_and_run and "\n" not in install_and_test
    assert "bttui run experiments/quickstart.toml" in install_and_run
    assert "pytest" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci.splitlines()


def test_every_shipped_experiment_loads():
    from bttui.config import load_config

    configs = sorted((ROOT / "experiments").rglob("*.toml"))
    assert configs, "experiments/ ships no configs"
    for path in configs:
        cfg = load_config(path, check_paths=False)
        assert cfg.name
