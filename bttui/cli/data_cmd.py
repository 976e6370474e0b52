"""`bttui data ls | check | preview`: browse, validate and look at MIMeta-format data without torch or mimeta."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bttui.errors import BttuiError

# Default preview tile: 16 pixel columns x 16 pixel rows = 8 terminal lines with half blocks.
PREVIEW_WIDTH = 16
# Histogram bar length (characters) for the largest class count.
BAR_WIDTH = 24

RootArg = Annotated[Path, typer.Argument(metavar="ROOT", help="MIMeta data root (one sub-directory per dataset).",
                                         show_default=False)]


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `data ls`, `data check` and `data preview` to the `data` group."""
    data = groups["data"]
    data.command("ls")(data_ls_command)
    data.command("check")(data_check_command)
    data.command("preview")(data_preview_command)


# ----------------------------------------------------------------- ls


def _sizes(split: dict[str, Any]) -> str:
    return "/".join("-" if split.get(s) is None else str(split[s]) for s in ("train", "val", "test"))


def data_ls_command(
    root: RootArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List datasets: tasks, classes, split sizes (train/val/test) per split policy, image size, channels."""
    from bttui.data import reader

    infos, problems = reader.scan_datasets(root)
    summaries = [reader.summarize(i) for i in infos]
    if as_json:
        from bttui.cli.app import print_json

        print_json({"root": str(root), "datasets": summaries, "problems": problems})
        return
    from rich.table import Table
    from rich.text import Text

    from bttui.cli.app import console

    out = console()
    if not summaries:
        out.print(Text(f"no readable datasets under {root}"))
    else:
        table = Table(title=str(root), title_justify="left", box=None, pad_edge=False, padding=(0, 1, 0, 0),
                      caption="size: channels x height x width; splits: train/val/test images per data.split_policy", caption_justify="left")
        for col, kw in (("dataset", {"style": "bold", "no_wrap": True}), ("images", {"justify": "right", "no_wrap": True, "min_width": 6}),
                        ("size", {"no_wrap": True}), ("task", {"no_wrap": True}), ("classes", {"justify": "right", "no_wrap": True, "min_width": 7}),
                        ("mimeta", {"no_wrap": True}), ("original", {"no_wrap": True}), ("random", {"no_wrap": True})):
            table.add_column(col, **kw)
        for s in summaries:
            size = f"{s['channels']}x{s['image_size'][0]}x{s['image_size'][1]}"
            for k, t in enumerate(s["tasks"]):
                first = k == 0
                table.add_row(
                    Text(s["id"]) if first else Text(""),
                    Text("?" if s["num_images"] is None else f"{s['num_images']:,}") if first else Text(""),
                    Text(size) if first else Text(""),
                    Text(t["name"]),
                    Text(str(t["num_classes"])),
                    Text(_sizes(s["splits"]["mimeta"])) if first else Text(""),
                    Text(_sizes(s["splits"]["original"])) if first else Text(""),
                    Text(_sizes(s["splits"]["random"])) if first else Text(""),
                )
        out.print(table)
        out.print()
        for s in summaries:
            for t in s["tasks"]:
                names = ", ".join(f"{i} {c}" for i, c in enumerate(t["classes"]))
                out.print(Text.assemble((s["id"], "bold"), f" / {t['name']}: ", (names, "")), soft_wrap=False)
    if problems:
        err = console(stderr=True)
        for p in problems:
            err.print(Text(f"skipped: {p}", style="yellow"), soft_wrap=True)
        err.print(Text(f"run `bttui data check {root}` for every problem", style="dim"))


# ----------------------------------------------------------------- check


def data_check_command(
    root: RootArg,
    dataset: Annotated[Optional[str], typer.Argument(metavar="[DATASET]", help="Check only this dataset id.",
                                                     show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Check MIMeta files (info.yaml, images.hdf5, labels, split files); list every problem; exit 2 if any."""
    from rich.text import Text

    from bttui.cli.app import console, print_json
    from bttui.data import reader

    problems = reader.check(root, dataset)
    if as_json:
        print_json({"root": str(root), "dataset": dataset, "ok": not problems, "problems": problems})
        if problems:
            raise typer.Exit(2)
        return
    out = console()
    if not problems:
        ids = [dataset] if dataset else [i.id for i in reader.list_datasets(root)]
        out.print(Text(f"ok: {len(ids)} dataset{'s' if len(ids) != 1 else ''} under {root} "
                       f"({', '.join(ids)}): no problems found"))
        return
    for i, p in enumerate(problems, 1):
        out.print(Text.assemble((f"{i:>3}. ", "bold red"), p), soft_wrap=True)
    raise BttuiError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found under {root}"
                     f"{f' in {dataset}' if dataset else ''}; each line above names the file and a fix.")


# ----------------------------------------------------------------- preview


def area_resize(img: Any, width: int) -> Any:
    """uint8 [H,W] or [H,W,3] -> float [w',w',C] by area averaging (w' = min(width, H, W)); C = 1 or 3."""
    import numpy as np

    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    h, w = x.shape[:2]
    side = max(1, min(width, h, w))
    rows = np.linspace(0, h, side + 1).astype(int)[:-1]
    cols = np.linspace(0, w, side + 1).astype(int)[:-1]
    s = np.add.reduceat(np.add.reduceat(x, rows, axis=0), cols, axis=1)
    nr = np.diff(np.append(rows, h))[:, None, None]
    nc = np.diff(np.append(cols, w))[None, :, None]
    return s / (nr * nc)


def halfblock_lines(img: Any, width: int = PREVIEW_WIDTH) -> list[Any]:
    """An image as Rich Text lines of '▀': the upper pixel is the foreground colour, the lower one the background.

    Grayscale images use equal R, G and B (grey levels); RGB keeps its colours.
    """
    import numpy as np
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    px = np.clip(np.rint(area_resize(img, width)), 0, 255).astype(np.uint8)
    if px.shape[2] == 1:
        px = np.repeat(px, 3, axis=2)
    if px.shape[0] % 2:
        px = np.concatenate([px, px[-1:]], axis=0)  # odd height: repeat the last row under itself
    cache: dict[tuple, Style] = {}
    lines = []
    for r in range(0, px.shape[0], 2):
        line = Text()
        for c in range(px.shape[1]):
            key = (tuple(px[r, c].tolist()), tuple(px[r + 1, c].tolist()))
            style = cache.get(key)
            if style is None:
                style = cache[key] = Style(color=Color.from_rgb(*key[0]), bgcolor=Color.from_rgb(*key[1]))
            line.append("▀", style)
        lines.append(line)
    return lines


def histogram_table(class_names: list[str], hist: dict[str, Any], title: str) -> Any:
    """Rich table: one row per class, image counts per split and a bar for the training count."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("class")
    for s in ("train", "val", "test"):
        table.add_column(s, justify="right")
    table.add_column("", no_wrap=True)  # bar of the train count
    top = max(1, max(int(v) for v in hist["train"])) if len(hist["train"]) else 1
    for k, name in enumerate(class_names):
        n_train = int(hist["train"][k])
        bar = "█" * int(round(BAR_WIDTH * n_train / top))
        empty = [s for s in ("train", "val", "test") if int(hist[s][k]) == 0]
        table.add_row(str(k), Text(name),
                      *[Text(str(int(hist[s][k])), style="bold red" if s in empty else "") for s in ("train", "val", "test")],
                      Text(bar or "·", style="cyan"))
    table.add_row("", Text("total", style="bold"), *[Text(str(int(sum(hist[s]))), style="bold")
                                                      for s in ("train", "val", "test")], Text(""))
    return table


def data_preview_command(
    root: RootArg,
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="Dataset id.", show_default=False)],
    task: Annotated[Optional[str], typer.Option("--task", help="Task name (default: the first one).",
                                                show_default=False)] = None,
    per_class: Annotated[int, typer.Option("--per-class", "-n", min=0, max=20, help="Sample images per class.")] = 3,
    split: Annotated[str, typer.Option("--split", help="Split the samples are drawn from.")] = "train",
    policy: Annotated[str, typer.Option("--policy", help="Split policy: mimeta, original or random.")] = "mimeta",
    width: Annotated[int, typer.Option("--width", min=2, max=64, help="Image width in terminal columns.")] = PREVIEW_WIDTH,
    seed: Annotated[int, typer.Option("--seed", help="Which samples are drawn.")] = 0,
) -> None:
    """Draw sample images per class in the terminal (half-block characters) and the class histogram per split."""
    import numpy as np
    from rich.text import Text

    from bttui.cli.app import console
    from bttui.data import reader

    info = reader.read_info(root, dataset)
    t = info.task(task)
    if split not in reader.SPLITS:
        raise BttuiError(f"Unknown split '{split}' (--split); valid: {', '.join(reader.SPLITS)}.")
    reader.require_valid(root, dataset, task=t.name, policy=policy)
    labels = np.asarray(reader.read_labels(root, dataset, t.name)).reshape(-1)
    idx = reader.read_split(root, dataset, split, policy)
    out = console()
    out.print(Text.assemble((info.id, "bold"), f"  {info.name} · {info.domain} · task '{t.name}' · "
                            f"{info.channels}x{info.input_size[1]}x{info.input_size[2]} · {policy} {split} split"),
              soft_wrap=True)
    if per_class > 0:
        rng = np.random.default_rng(seed)
        picks: list[tuple[int, np.ndarray]] = []
        for k in range(t.num_classes):
            members = idx[labels[idx] == k]
            chosen = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False)) if len(members) else members
            picks.append((k, chosen))
        flat = np.concatenate([c for _, c in picks]) if picks else np.empty(0, np.int64)
        images = reader.read_images(root, dataset, flat) if flat.size else None
        pos = 0
        for k, chosen in picks:
            out.print(Text.assemble((f"{k:>2} ", "dim"), (t.labels[k], "bold"),
                                    (f"  {len(chosen)} of {int((labels[idx] == k).sum())} in {split}", "dim")))
            if not len(chosen):
                out.print(Text("   (no image of this class in this split)", style="yellow"))
                continue
            tiles = [halfblock_lines(images[pos + j], width) for j in range(len(chosen))]
            pos += len(chosen)
            for r in range(max(len(tl) for tl in tiles)):
                line = Text("   ")
                for tl in tiles:
                    line.append_text(tl[r] if r < len(tl) else Text(" " * len(tl[0])))
                    line.append(" ")
                out.print(line, no_wrap=True, crop=True)
    hist = reader.class_histograms(root, dataset, t.name, policy)
    out.print(histogram_table(t.labels, hist, f"images per class ({policy} splits)"))
