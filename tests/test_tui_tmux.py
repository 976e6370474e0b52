"""Real-terminal test: `bttui` in tmux at 80x24 and 200x50, driven with send-keys and read with capture-pane."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bttui.runs import liveness
from bttui.tui.sources import write_sample_store

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (needed for the real-terminal test)")

LIVE = "20241125-124800-crc-bt-paper-a1b2"


def bttui_command() -> list[str]:
    exe = Path(sys.executable).with_name("bttui")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bttui"]


class Tmux:
    """One private tmux server (its own socket) holding one window of a fixed size."""

    def __init__(self, socket: str, width: int, height: int, command: str) -> None:
        self.base = [TMUX, "-L", socket]
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "NO_COLOR")}
        env["TERM"] = "xterm-256color"
        subprocess.run(self.base + ["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(width),
                                    "-y", str(height), command], check=True, env=env)

    def send(self, *keys: str) -> None:
        subprocess.run(self.base + ["send-keys", "-t", "t", *keys], check=True)

    def type(self, text: str) -> None:
        subprocess.run(self.base + ["send-keys", "-t", "t", "-l", text], check=True)

    def screen(self) -> str:
        return subprocess.run(self.base + ["capture-pane", "-p", "-t", "t"], check=True,
                              capture_output=True, text=True).stdout

    def wait_for(self, *texts: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{texts!r} not on the screen after {timeout} s:\n{screen}")

    def kill(self) -> None:
        subprocess.run(self.base + ["kill-server"], capture_output=True)


@pytest.fixture
def live_store(tmp_path):
    """The sample store whose running run is a real detached process (sleeping python) on this machine."""
    root = write_sample_store(tmp_path / "runs")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status_path = root / LIVE / "status.json"
    status = json.loads(status_path.read_text())
    status.update(pid=proc.pid, pid_start=liveness.process_start_time(proc.pid), pgid=proc.pid,
                  host=liveness.hostname(), boot_id=liveness.boot_id(), heartbeat=time.time())
    status_path.write_text(json.dumps(status))
    yield root, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_bttui_in_tmux(live_store, tmp_path, size):
    root, run_proc = live_store
    width, height = size
    argv = " ".join(f"'{a}'" for a in [*bttui_command(), "--store", str(root)])
    # The shell prints bttui's exit code, then stays so the pane can still be read.
    command = f"sh -c \"{argv}; echo BTTUI-EXIT=\\$?; sleep 60\""
    tmux = Tmux(f"bttui-test-{os.getpid()}-{width}", width, height, command)
    try:
        screen = tmux.wait_for("organs-xdomain", "bttui  5 runs")
        lines = screen.splitlines()
        assert len(lines) == height and all(len(line) <= width for line in lines)
        live_line = next(line for line in lines if "crc-bt-paper" in line)
        assert "● running" in live_line  # the detached process is alive: not "crashed"
        assert "quick[bold]start" in screen  # markup-looking name shown literally
        assert "12/100 ep" in live_line

        # The live run's dashboard.
        tmux.send("/")
        tmux.wait_for("filter: words or status:")  # typed before the box has focus, keys would act on the table
        tmux.type("crc-bt-paper")
        tmux.send("Enter")
        tmux.wait_for("1/5 runs")
        tmux.send("Enter")
        screen = tmux.wait_for("epoch 12/100", "Loss", "1,620/2,048")
        assert "● running" in screen.splitlines()[0]
        if width < 110:
            # Stacked: one-line strips under the chart instead of side panels.
            assert "img/s 3.4k" in screen and "collapse: no" in screen and "rank 1,620/2,048" in screen and "[not markup]" in screen
            assert "Cross-correlation" not in screen
        else:
            assert "Cross-correlation" in screen and "Throughput" in screen and "Health" in screen
            assert "eff. rank 1,620/2,048" in screen and "[not markup]" in screen

        # Back, then the completed sweep and its confusion matrix.
        tmux.send("Escape")
        tmux.wait_for("1/5 runs")
        tmux.send("Escape")
        tmux.wait_for("bttui  5 runs")
        tmux.send("/")
        tmux.wait_for("filter: words or status:")  # typed before the box has focus, keys would act on the table
        tmux.type("organs")
        tmux.send("Enter")
        tmux.wait_for("1/5 runs")
        tmux.send("Enter")
        tmux.wait_for("cells 3/3", "Log scale")  # the dashboard, not the runs table
        tmux.send("r")
        # Class names in the header once the matrix is drawn at the panel's real width.
        screen = tmux.wait_for("BT / linear / 10%", "% of each row", "true \\ pred  heart")
        assert "organs-xdomain" in screen and "test n=100" in screen
        rows = [line for line in screen.splitlines() if " heart " in line and "60.0" in line and "10.0" in line]
        assert rows  # the class name with its row-normalised percentages
        assert "l. lung [L]" in screen
        tmux.send("m")
        screen = tmux.wait_for("counts")
        assert next(line for line in screen.splitlines() if " heart " in line and " 12 " in line)

        # Quit: bttui exits 0 and the detached run keeps going.
        tmux.send("q")
        tmux.wait_for("BTTUI-EXIT=0", timeout=10)
        assert run_proc.poll() is None
        assert liveness.pid_alive(run_proc.pid, liveness.process_start_time(run_proc.pid))
        assert json.loads((root / LIVE / "status.json").read_text())["status"] == "running"
    finally:
        tmux.kill()


def _backgrounds(ansi: str) -> list[float]:
    """Luminance (0 dark .. 1 light) of every background colour set in a `capture-pane -e` dump."""
    import re

    lum = []
    for m in re.finditer(r"\x1b\[([0-9;]*)m", ansi):
        codes = [int(c) if c else 0 for c in m.group(1).split(";")]
        i = 0
        while i < len(codes):
            if codes[i] == 48 and i + 4 < len(codes) and codes[i + 1] == 2:
                r, g, b = codes[i + 2:i + 5]
                lum.append((0.2126 * r + 0.7152 * g + 0.0722 * b) / 255)
                i += 5
            elif codes[i] == 48 and i + 2 < len(codes) and codes[i + 1] == 5:
                n = codes[i + 2]
                if 16 <= n <= 231:
                    n -= 16
                    r, g, b = (0 if v == 0 else 55 + 40 * v for v in (n // 36, n // 6 % 6, n % 6))
                    lum.append((0.2126 * r + 0.7152 * g + 0.0722 * b) / 255)
                elif n >= 232:
                    lum.append((8 + 10 * (n - 232)) / 255)
                i += 3
            else:
                i += 1
    return lum


@pytest.mark.parametrize("colorfgbg, light", [("0;15", True), ("15;0", False)], ids=["light-terminal", "dark-terminal"])
def test_theme_follows_the_terminal_background(tmp_path, monkeypatch, colorfgbg, light):
    """`bttui` picks its light theme on a terminal that says its background is light ($COLORFGBG)."""
    root = write_sample_store(tmp_path / "runs")
    monkeypatch.setenv("COLORFGBG", colorfgbg)
    monkeypatch.delenv("BTTUI_THEME", raising=False)
    argv = " ".join(f"'{a}'" for a in [*bttui_command(), "--store", str(root)])
    tmux = Tmux(f"bttui-theme-{os.getpid()}-{int(light)}", 80, 24, f"sh -c \"{argv}; sleep 60\"")
    try:
        tmux.wait_for("organs-xdomain", "bttui  5 runs")
        dump = subprocess.run(tmux.base + ["capture-pane", "-p", "-e", "-t", "t"], check=True,
                              capture_output=True, text=True).stdout
        lum = _backgrounds(dump)
        assert lum, "no background colours in the pane"
        median = sorted(lum)[len(lum) // 2]
        assert (median > 0.6) if light else (median < 0.3), f"median background luminance {median:.2f}"
        tmux.send("q")
    finally:
        tmux.kill()
