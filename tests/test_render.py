"""Tests of the shared terminal renderers: formatters, glyphs, confusion matrices, tables, live progress."""

from __future__ import annotations

import re

import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bttui.render import format as fmt
from bttui.render.confusion import abbreviate, confusion_matrix_table, confusion_table
from bttui.render.glyphs import STATUS_GLYPH, STATUS_STYLE, status_text
from bttui.render.progress import ProgressState, cells_in_config
from bttui.render.tables import init_comparison_table, config_sources_table, fmt_progress, init_label, results_table, runs_table


def render(renderable, width: int = 100, color: bool = False) -> str:
    console = Console(width=width, record=True, force_terminal=color, color_system="truecolor" if color else None,
                      highlight=False)
    console.print(renderable)
    return console.export_text(styles=color)


def column_cells(table: Table, index: int) -> list[str]:
    return [c.plain if isinstance(c, Text) else str(c) for c in table.columns[index]._cells]


# ----------------------------------------------------------------- formatters


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.4, "0.4s"), (12, "12s"), (65, "1m05s"), (41 * 60, "41m"), (3 * 3600 + 12 * 60, "3h12m"),
     (2 * 86400 + 3 * 3600, "2d03h"), (None, "-"), (float("nan"), "-"), (-3, "0.0s")],
)
def test_fmt_duration(seconds, expected):
    assert fmt.fmt_duration(seconds) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(812.4321, "812.4"), (0.0123456, "0.01235"), (12345.6, "1.235e+04"), (2.0, "2"),
     ("nan", "nan"), (float("inf"), "inf"), (None, "-"), ("x", "-")],
)
def test_fmt_loss_four_significant_digits(value, expected):
    assert fmt.fmt_loss(value) == expected


def test_fmt_accuracy_fraction_ci_bytes_rate():
    assert fmt.fmt_accuracy(0.6341) == "63.4%"
    assert fmt.fmt_accuracy(1.0) == "100.0%"
    assert fmt.fmt_accuracy(None) == "-"
    assert fmt.fmt_accuracy(0.6341, digits=2) == "63.41%"
    assert fmt.fmt_ci([0.601, 0.667]) == "60.1–66.7"
    assert fmt.fmt_ci(None) == ""
    assert fmt.fmt_fraction(0.1) == "10%"
    assert fmt.fmt_fraction(0.005) == "0.5%"
    assert fmt.fmt_fraction(1.0) == "100%"
    assert fmt.fmt_bytes(512) == "512 B"
    assert fmt.fmt_bytes(1536) == "1.5 KiB"
    assert fmt.fmt_bytes(3 * 1024**3) == "3.0 GiB"
    assert fmt.fmt_rate(1234.5) == "1.23k img/s"
    assert fmt.fmt_rate(87.44) == "87.4 img/s"


def test_clean_makes_control_characters_visible():
    assert fmt.clean("a\x1b[31mred\x07") == "a\\e[31mred\\a"
    assert fmt.clean("two\nlines\tx", single_line=True) == "two lines x"
    assert fmt.clean("keep\nnewline") == "keep\nnewline"
    assert fmt.clean("\x9b") == "\\x9b"
    assert fmt.clean(None) == ""


def test_fmt_time_and_value():
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", fmt.fmt_time("2024-11-25T20:58:00Z"))
    assert fmt.fmt_time("not a time") == "not a time"
    assert fmt.fmt_value([0.1, 0.5]) == "[0.1, 0.5]"
    assert fmt.fmt_value(True) == "true"
    assert fmt.fmt_value("x") == '"x"'
    assert fmt.fmt_value(None) == "-"


# ----------------------------------------------------------------- glyphs


def test_glyph_mapping_covers_every_status():
    assert STATUS_GLYPH == {"queued": "◌", "running": "●", "completed": "✓", "failed": "✗",
                            "stopped": "■", "crashed": "✗!", "pending": "·", "skipped": "–"}
    assert set(STATUS_STYLE) == set(STATUS_GLYPH)
    assert status_text("completed").plain == "✓ completed"
    assert status_text("crashed").plain == "✗! crashed"
    assert status_text("bogus").plain == "? bogus"
    assert status_text("failed", "loss is nan").plain == "✗ failed: loss is nan"


def test_status_text_shows_reason_literally():
    text = status_text("failed", "[bold]boom[/bold] \x1b[2J")
    out = render(text, color=True)
    assert "[bold]boom[/bold]" in out
    assert "\x1b[2J" not in out and "\\e[2J" in out


# ----------------------------------------------------------------- confusion


MATRIX = [[8, 2, 0], [1, 6, 3], [0, 0, 5]]
NAMES = ["adipose", "background", "debris"]


def test_confusion_rows_are_percentages_of_their_row():
    table = confusion_table(MATRIX, NAMES, width=120)
    assert column_cells(table, 0) == NAMES
    # Columns 1..3 are the predicted classes, the last one the row count.
    rows = [[column_cells(table, j)[i] for j in range(1, 4)] for i in range(3)]
    assert rows[0] == ["80.0", "20.0", "0"]
    assert rows[1] == ["10.0", "60.0", "30.0"]
    assert rows[2] == ["0", "0", "100"]
    for row in rows:
        assert sum(float(v) for v in row) == pytest.approx(100.0)
    assert column_cells(table, 4) == ["10", "10", "5"]
    assert [c.header.plain for c in table.columns[1:4]] == NAMES


def test_confusion_counts_mode_and_alias():
    table = confusion_matrix_table(MATRIX, NAMES, normalize=False, width=120)
    assert [column_cells(table, j)[1] for j in range(1, 4)] == ["1", "6", "3"]
    assert "counts" in str(table.caption)


def test_confusion_numbers_readable_without_colour_and_background_with_it():
    plain = render(confusion_table(MATRIX, NAMES, title="organs", width=100), color=False)
    assert "80.0" in plain and "background" in plain and "organs" in plain
    coloured = render(confusion_table(MATRIX, NAMES, width=100), color=True)
    # Diagonal cells get a green background, confusions a red one (truecolor escapes, 48;2;R;G;B).
    backgrounds = re.findall(r"48;2;(\d+);(\d+);(\d+)", coloured)
    assert any(int(g) > int(r) for r, g, _ in backgrounds)
    assert any(int(r) > int(g) for r, g, _ in backgrounds)


def test_confusion_narrow_terminal_abbreviates_or_indexes():
    names = [f"organ_{i}" for i in range(11)]
    matrix = [[10 if i == j else 1 for j in range(11)] for i in range(11)]
    table = confusion_table(matrix, names, width=80)
    headers = [c.header.plain for c in table.columns[1:-1]]
    # "organ_1" and "organ_10" cut to a few characters would collide: indices instead.
    assert headers == [str(i) for i in range(11)]
    assert column_cells(table, 0)[10] == "10 organ_10"
    out = render(table, width=80)
    assert max(len(line) for line in out.splitlines()) <= 80

    long = ["adipose tissue", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
            "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]
    table = confusion_table([[1] * 9 for _ in range(9)], long, width=100)
    headers = [c.header.plain for c in table.columns[1:-1]]
    assert all(len(h) <= 6 for h in headers) and headers[0].startswith("adip")
    assert column_cells(table, 0)[5] == "smooth muscle"
    assert abbreviate(["alpha", "alpine"], 4) is None
    assert abbreviate(["alpha", "beta"], 4) == ["alp…", "beta"]


def test_confusion_eleven_organs_fit_a_58_column_panel():
    """The Results panel at 120 columns is 58 wide: every predicted class and the row count stay on screen
    (one space between columns instead of two when two do not fit)."""
    names = ["heart", "left lung", "right lung", "liver", "spleen", "pancreas", "left kidney", "right kidney",
             "bladder", "left femoral head", "right femoral head"]
    # 8 test images per class: percentages such as 100 and 62.5 (three characters once rounded).
    matrix = [[(8 if i % 3 == 0 else 5) if i == j else (3 if j == (i + 3) % 11 and i % 3 else 0) for j in range(11)]
              for i in range(11)]
    for width in (58, 64):
        out = render(confusion_table(matrix, names, width=width), width=width)
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= width
        header = next(line for line in lines if line.startswith("true"))
        assert header.split()[-2:] == ["10", "n"], header
        assert next(line for line in lines if line.startswith("10 ")).split()[-1] == "8"  # the row count
    # Wide panels keep the two-space gap.
    wide = render(confusion_table(matrix, names, width=100), width=100)
    assert "  10  n" in next(line for line in wide.splitlines() if line.startswith("true"))


def test_confusion_class_names_are_literal_and_empty_rows_dash():
    table = confusion_table([[0, 0], [1, 1]], ["[red]x[/red]", "a\x1bb"], width=80)
    out = render(table, color=True)
    assert "[red]x[/red]" in out and "a\\eb" in out
    assert column_cells(table, 1)[0] == "-"


def test_confusion_rejects_non_square():
    with pytest.raises(ValueError):
        confusion_table([[1, 2], [3]], ["a", "b"])


# ----------------------------------------------------------------- tables


RESULT = {
    "cell": "organs_sagittal/barlow_twins/linear/0.1/s0", "dataset": "organs_sagittal", "task": "organ label",
    "init": "barlow_twins:20241125-205800-demo-ab12", "strategy": "linear", "label_fraction": 0.1,
    "n_train": 98, "seed": 0, "status": "completed", "test_accuracy": 0.6341,
    "test_accuracy_ci": [0.601, 0.667], "confusion_matrix": MATRIX, "class_names": NAMES,
}


def test_results_table_columns_and_values():
    failed = dict(RESULT, status="failed", test_accuracy=None, test_accuracy_ci=None, label_fraction=1.0,
                  dataset="crc", seed=1)
    table = results_table([RESULT, failed], width=100)
    headers = [c.header for c in table.columns]
    assert headers[:8] == ["dataset", "init", "strategy", "labels", "n", "seed", "status", "accuracy"]
    assert column_cells(table, 7) == ["63.4% (60.1–66.7)", "-"]
    assert column_cells(table, 6) == ["✓ completed", "✗ failed"]
    assert column_cells(table, 3) == ["10%", "100%"]
    assert "bal. acc" not in headers
    narrow = results_table([RESULT], width=80)
    assert column_cells(narrow, 7) == ["63.4%"]
    out = render(narrow, width=80)
    assert "63.4%" in out and "✓ completed" in out and "organs_sagittal" in out
    assert column_cells(narrow, 1) == ["barlow_twins"]
    assert init_label("barlow_twins:20241125-205800-demo-ab12@epoch=5") == "barlow_twins@epoch=5"
    assert init_label("run:20241125-205800-demo-ab12") == "run:20241125-205800-demo-ab12"
    with_bal = results_table([dict(RESULT, balanced_accuracy=0.5, macro_f1=0.4567)], width=120)
    assert len(results_table([dict(RESULT, balanced_accuracy=0.5)], width=80).columns) == 8
    assert [c.header for c in with_bal.columns][-2:] == ["bal. acc", "macro F1"]
    assert column_cells(with_bal, 9) == ["0.457"]
    # one dataset and one seed for every row: both move into the title, the interval fits at 80 columns
    same = results_table([RESULT, dict(RESULT, init="random", test_accuracy=0.5)], width=80)
    assert [c.header for c in same.columns] == ["init", "strategy", "labels", "n", "status", "accuracy"]
    assert "organs_sagittal" in str(same.title) and "seed 0" in str(same.title)
    assert column_cells(same, 5)[0] == "63.4% (60.1–66.7)"


def test_init_comparison_marks_the_best_init_and_averages_seeds():
    rows = [dict(RESULT, init="barlow_twins:20241125-205800-demo-ab12", test_accuracy=0.6, seed=0),
            dict(RESULT, init="barlow_twins:20241125-205800-demo-ab12", test_accuracy=0.8, seed=1),
            dict(RESULT, init="random", test_accuracy=0.5, seed=0)]
    table = init_comparison_table(rows)
    assert [c.header for c in table.columns] == ["strategy", "labels", "barlow_twins", "random"]
    assert column_cells(table, 2) == ["70.0% ▲"] and column_cells(table, 3) == ["50.0%  "]
    assert init_comparison_table([RESULT]) is None


def test_runs_table_and_progress_words():
    rows = [
        {"id": "20241125-205800-x-ab12", "name": "[bold]x[/bold]", "status": "failed", "status_reason": "nan loss",
         "created": "2024-11-25T20:58:00+00:00", "stage": "pretrain", "progress": 0.3, "best_accuracy": None},
        {"id": "b", "name": "b", "status": "completed", "created": None, "stage": "finetune",
         "progress": {"cells_done": 8, "cells_total": 8}, "best_accuracy": 0.81},
    ]
    table = runs_table(rows, width=120)
    assert [c.header for c in table.columns] == ["status", "id", "name", "created", "progress", "best", "reason"]
    assert column_cells(table, 0) == ["✗ failed", "✓ completed"]
    assert column_cells(table, 2)[0] == "[bold]x[/bold]"
    assert column_cells(table, 4) == ["pretrain 30%", ""]
    assert column_cells(table, 5) == ["-", "81.0%"]
    assert column_cells(table, 6) == ["nan loss", ""]
    narrow = runs_table(rows, width=80)
    assert [c.header for c in narrow.columns] == ["status", "id", "progress", "best", "reason"]
    out = render(narrow, width=80)
    assert "20241125-205800-x-ab12" in out and "✗ failed" in out
    assert [c.header for c in runs_table(rows[1:], width=80).columns] == ["status", "id", "progress", "best"]
    assert fmt_progress({"progress": None}) == ""
    assert fmt_progress({"status": "running", "stage": "finetune", "progress": {"cells_done": 2, "cells_total": 8}}) \
        == "cells 2/8"


def test_config_sources_table():
    table = config_sources_table([("pretrain.epochs", 10, "cfg.toml:3"), ("name", "demo", "default")])
    assert column_cells(table, 1) == ["10", '"demo"']
    assert column_cells(table, 2) == ["cfg.toml:3", "default"]


# ----------------------------------------------------------------- progress


CONFIG = {"pretrain": {"epochs": 10},
          "finetune": {"datasets": ["a"], "init": ["random", "imagenet"], "strategy": ["linear", "full"],
                       "label_fractions": [0.1, 1.0], "seeds": [0], "epochs": 5}}


def test_cells_in_config():
    assert cells_in_config(CONFIG) == 8
    assert cells_in_config({"pretrain": {}}) == 0


def test_progress_lines_and_eta():
    clock = [1000.0]
    state = ProgressState(CONFIG, clock=lambda: clock[0])
    assert state.feed({"t": 1000.0, "type": "stage_start", "stage": "pretrain", "epochs": 10, "start_epoch": 0,
                       "steps": 100}) == ["pretrain started (10 epochs)"]
    assert state.eta(now=1000.0) is None
    state.feed({"t": 1004.0, "type": "step", "stage": "pretrain", "step": 1, "loss": 950.0})
    state.feed({"t": 1005.0, "type": "step", "stage": "pretrain", "step": 5, "loss": 900.123, "images_per_s": 250})
    # Before an epoch ends the step pace counts: 4 steps per second after the first step, 95 to go.
    assert state.eta(now=1005.0) == pytest.approx(95 * 0.25)
    assert state.fraction() == pytest.approx(0.05)
    lines = state.feed({"t": 1012.3, "type": "epoch", "stage": "pretrain", "epoch": 1, "loss": 812.44})
    assert lines == ["pretrain epoch 1/10 loss 812.4 (12.3s)"]
    lines = state.feed({"t": 1022.3, "type": "epoch", "stage": "pretrain", "epoch": 2, "loss": 700.0})
    assert lines == ["pretrain epoch 2/10 loss 700 (10.0s)"]
    # 2 epochs in 22.3 s -> 8 more take 89.2 s.
    assert state.eta(now=1022.3) == pytest.approx(89.2)
    state.feed({"t": 1022.3, "type": "step", "stage": "pretrain", "step": 20})
    assert state.fraction() == pytest.approx(0.2)
    summary = state.summary_text(now=1022.3).plain
    assert "pretrain" in summary and "epoch 2/10" in summary and "loss 700" in summary and "250 img/s" in summary
    assert "step 20/100" in summary
    assert "ETA 1m29s" in summary

    state.feed({"t": 1100.0, "type": "stage_start", "stage": "finetune"})
    state.feed({"t": 1100.0, "type": "cell_start", "cell": "a/random/linear/0.1/s0"})
    state.feed({"t": 1102.0, "type": "cell_epoch", "cell": "a/random/linear/0.1/s0", "epoch": 1,
                "val_accuracy": 0.5, "train_loss": 1.2})
    assert state.eta(now=1102.0) == pytest.approx(8 * 10.0 - 2.0)
    lines = state.feed({"t": 1110.0, "type": "cell_end", "cell": "a/random/linear/0.1/s0",
                        "result": {"cell": "a/random/linear/0.1/s0", "status": "completed", "test_accuracy": 0.634}})
    assert lines == ["cell 1/8 a/random/linear/0.1/s0 acc 63.4%"]
    state.feed({"t": 1110.0, "type": "cell_start", "cell": "a/random/linear/1/s0"})
    lines = state.feed({"t": 1111.0, "type": "cell_end", "cell": "a/random/linear/1/s0", "status": "failed",
                        "error": "out of memory"})  # a flat event (no "result") is read too
    assert lines == ["cell 2/8 a/random/linear/1/s0 failed: out of memory"]
    assert state.best_accuracy == pytest.approx(0.634)
    assert state.feed({"t": 1112.0, "type": "log", "level": "warning", "message": "collapse?"}) == ["warning: collapse?"]
    assert state.feed({"t": 1113.0, "type": "status", "status": "stopped", "reason": "user"}) == ["status stopped (user)"]
    assert state.feed({"t": 1114.0, "type": "stage_end", "stage": "pretrain", "status": "failed",
                       "reason": "loss became NaN"}) == ["pretrain failed: loss became NaN"]


def test_progress_status_merge_and_renderable():
    state = ProgressState(None, clock=lambda: 0.0)
    state.update_status({"status": "running", "stage": "pretrain", "epoch": 3, "epochs": 10, "step": 120,
                         "loss": 812.4, "cells_total": 8})
    assert state.fraction() == pytest.approx(0.3)
    out = render(state.renderable(now=0.0), width=100)
    assert "● running" in out and "epoch 3/10" in out and "step 120" in out and "30% of pretrain" in out
