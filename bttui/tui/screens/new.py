"""The New experiment screen: a form built from the config schema, validated as you type, launched or saved.

Every field of ``ExperimentConfig`` and its sections gets a widget (switch for
booleans, select for choices, an input for numbers, strings and TOML arrays)
with its schema doc underneath. Values start from a shipped experiment or a
past run's config. The form's values go through ``config_from_dict``, so the
status line shows exactly the CLI's error text. Dataset ids come from the data
root and GPUs from the injected sampler, both read in thread workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.timer import Timer
from textual.widgets import Input, Label, Select, SelectionList, Static, Switch
from textual.worker import get_current_worker

from bttui.config.load import FIELDS
from bttui.tui.form import (
    DATASET_KEYS,
    GPU_KEY,
    NONE_CHOICE,
    FormError,
    config_values,
    display_file,
    display_value,
    experiment_files,
    form_dict,
    merge_picked,
    parse_list_text,
    sections,
    show_path,
    widget_kind,
)
from bttui.tui.widgets.footer import AdaptiveFooter
from bttui.tui.widgets.formatting import clean
from bttui.tui.widgets.pickers import MarkedSelectionList

# Typing pauses this long before the form is re-validated (a keystroke costs nothing, a check ~1 ms).
VALIDATE_DELAY_S = 0.3
PREVIEW_CELLS = 8
DEFAULTS_CHOICE = "defaults"


def fid(key: str) -> str:
    """The widget id of a dotted config key."""
    return "f-" + key.replace(".", "-")


def switch_word(on_: bool) -> str:
    return "true" if on_ else "false"


def section_word(on_: bool) -> str:
    return "included" if on_ else "left out"


def pick_id(key: str) -> str:
    return "pick-" + key.replace(".", "-")


@dataclass
class DatasetsListed(Message):
    """The data root was read: (id, name, task names) per dataset, or why it could not be."""

    root: str
    datasets: list[tuple[str, str, list[str]]]
    error: str | None


@dataclass
class GpusSampled(Message):
    """The GPU sampler's devices for the GPU picker."""

    samples: list[Any]
    available: bool


@dataclass
class ExperimentLaunched(Message):
    """controls.launch finished: the new run id, or the refusal."""

    ok: bool
    text: str


class NewExperimentScreen(Screen[None]):
    """The experiment form. ``from_run`` starts from that run's config; ``offer_run`` is listed as a source."""

    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", priority=True),
        Binding("ctrl+s", "save", "Save as", priority=True),
        Binding("escape", "back", "Back"),
        Binding("f1", "help", "Help"),
        # Inputs take "?" as text; on a switch, select or picker it opens the help too.
        Binding("question_mark", "help", "Help", show=False),
    ]
    HELP = [("tab / shift+tab", "next / previous field"), ("ctrl+l", "launch in the background (like bttui run --detach)"),
            ("ctrl+s", "save as a new TOML in the experiments folder"), ("space", "toggle a switch or a picked item"),
            ("from", "start from a shipped experiment, a past run's config or the schema defaults"),
            ("lists", "TOML arrays, e.g. [0.1, 1.0] or [\"organs_axial\"]"), ("esc", "back (nothing is saved)"),
            ("f1 (or ? outside a text field)", "this help")]

    def __init__(self, from_run: str | None = None, offer_run: str | None = None) -> None:
        super().__init__()
        self.from_run = from_run
        self.offer_run = offer_run or from_run
        self.cwd = Path.cwd()
        self.settings: Any = None
        self.settings_error: str | None = None
        self.source_paths: dict[str, Path] = {}
        self.choices: list[tuple[str, str]] = []
        self.choice: str = DEFAULTS_CHOICE
        self.load_error: str | None = None
        self.cfg: Any = None  # the form's config when valid
        self.error: str | None = None
        self.cells: list[Any] = []
        self.validations = 0
        self.enabled: dict[str, bool] = {}
        self.datasets: list[tuple[str, str, list[str]]] = []
        self.data_error: str | None = None
        self.listed_root: str | None = None
        self.gpu_samples: list[Any] = []
        self.saved_path: Path | None = None
        self._saved_cfg: Any = None  # what was saved there, so a launch of the same config names the file
        self.launched: str | None = None
        self._timer: Timer | None = None
        self._last_preset: Any = None

    # ---------------------------------------------------------------- sources of defaults
    def _load_settings(self) -> None:
        from dataclasses import replace

        from bttui.config.settings import MachineSettings, load_settings
        from bttui.errors import BttuiError

        try:
            settings = load_settings()
        except BttuiError as exc:  # a broken settings file must not close the form; say so
            self.settings_error = str(exc)
            settings = MachineSettings()
        if self.app.data_root is not None:
            settings = replace(settings, data_root=str(self.app.data_root))
        self.settings = settings

    def _source_choices(self) -> list[tuple[str, str]]:
        out = []
        for path in experiment_files(Path(self.app.experiments_dir)):
            value = f"file:{path}"
            self.source_paths[value] = path
            out.append((display_file(path, self.cwd), value))
        if self.offer_run:
            run = self.app.source.get_run(self.offer_run)
            name = clean(run.name if run is not None else self.offer_run, single_line=True)
            out.insert(0, (f"run: {name}", f"run:{self.offer_run}"))
        out.append(("schema defaults", DEFAULTS_CHOICE))
        return out

    def load_choice(self, choice: str) -> tuple[Any, str | None]:
        """The config a source choice stands for (paths not checked), or None and the reason."""
        from bttui.config import config_from_dict, load_config
        from bttui.errors import BttuiError

        try:
            if choice.startswith("file:"):
                return load_config(self.source_paths[choice], settings=self.settings, check_paths=False), None
            if choice.startswith("run:"):
                run_id = choice[4:]
                data = self.app.source.read_config(run_id)
                if data is None:
                    return None, f"run {run_id} has no readable config.toml"
                return config_from_dict(data, f"run {run_id} config.toml", settings=self.settings,
                                        check_paths=False), None
            return config_from_dict({"pretrain": {}, "finetune": {}}, "schema defaults", settings=self.settings,
                                    check_paths=False), None
        except BttuiError as exc:
            return None, str(exc)

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        self._load_settings()
        self.choices = self._source_choices()
        values = [v for _, v in self.choices]
        if self.from_run and f"run:{self.from_run}" in values:
            self.choice = f"run:{self.from_run}"
        else:
            self.choice = next((v for v in values if v.startswith("file:")), DEFAULTS_CHOICE)
        cfg, self.load_error = self.load_choice(self.choice)
        if cfg is None:
            cfg, _ = self.load_choice(DEFAULTS_CHOICE)
        initial, self.enabled = config_values(cfg, self.cwd)
        self._last_preset = initial.get("preset")

        with Horizontal(id="new-top"):
            yield Static(Text.assemble((" New experiment ", "bold"), "  from "), id="new-title")
            yield Select(self.choices, value=self.choice, allow_blank=False, compact=True, id="new-from")
        with Horizontal(id="new-body"):
            with VerticalScroll(id="new-form", can_focus=False):
                for sec in sections():
                    yield from self._compose_section(sec, initial)
            yield Static(id="new-preview")
        yield Static(id="new-status")
        yield AdaptiveFooter()

    def _compose_section(self, sec: Any, initial: dict[str, Any]) -> ComposeResult:
        name = sec.name or "general"
        with Vertical(classes="form-section", id=f"sec-{name}"):
            with Horizontal(classes="section-title"):
                yield Static(Text.assemble((sec.title, "bold"), "  ", (sec.doc, "italic")), classes="section-name")
                if sec.optional:
                    on_ = self.enabled.get(sec.name, False)
                    yield Label(section_word(on_), id=f"state-enable-{sec.name}", classes="section-switch-label")
                    yield Switch(on_, id=f"enable-{sec.name}", animate=False)
            with Vertical(classes="section-body", id=f"body-{name}") as body:
                if sec.optional and not self.enabled.get(sec.name, False):
                    body.display = False
                for info in sec.fields:
                    yield from self._compose_field(info, initial[info.key])

    def _compose_field(self, info: Any, value: Any) -> ComposeResult:
        # Flat in the section body (no wrapper per field): the form has ~60 fields and every
        # widget costs Textual style and layout work when the screen opens.
        kind = widget_kind(info)
        with Horizontal(classes="field-line"):
            yield Label(info.name, classes="field-key")
            if kind == "switch":
                yield Switch(bool(value), id=fid(info.key), animate=False)
                # The switch's state is shown by colour and position; the word makes it plain.
                yield Label(switch_word(bool(value)), id=f"state-{fid(info.key)}", classes="switch-state")
            elif kind == "select":
                options = [("(none)" if c is None else str(c), NONE_CHOICE if c is None else c)
                           for c in info.choices]
                yield Select(options, value=value, allow_blank=False, compact=True, id=fid(info.key))
            else:
                itype = {"int": "integer", "float": "number"}.get(kind, "text")
                yield Input(str(value), type=itype, compact=True, id=fid(info.key), select_on_focus=False,
                            valid_empty=info.kind in ("str", "str?"))
        yield Static(Text(info.doc), classes="field-doc", id=f"doc-{fid(info.key)}")
        if info.key in DATASET_KEYS or info.key == GPU_KEY:
            picker: SelectionList = MarkedSelectionList(id=pick_id(info.key), classes="picker")
            picker.display = False
            yield picker
            yield Static(classes="picker-note", id=f"note-{pick_id(info.key)}")

    def on_mount(self) -> None:
        self.query_one("#new-from", Select).focus()
        if self.load_error:
            self.notify(clean(self.load_error), severity="error", markup=False, timeout=8)
        if self.settings_error:
            self.notify(clean(self.settings_error), severity="error", markup=False, timeout=8)
        self.validate_now()
        self.sample_gpus()

    # ---------------------------------------------------------------- reading the form
    def widget_value(self, key: str) -> Any:
        widget = self.query_one("#" + fid(key))
        return widget.value

    def form_values(self) -> dict[str, Any]:
        return {key: self.widget_value(key) for key in FIELDS}

    def form_dict(self) -> dict:
        return form_dict(self.form_values(), self.enabled)

    def set_value(self, key: str, value: Any) -> None:
        widget = self.query_one("#" + fid(key))
        if widget.value != value:
            widget.value = value

    def fill(self, cfg: Any) -> None:
        """Put ``cfg`` into every widget (re-validation follows through the Changed messages)."""
        values, enabled = config_values(cfg, self.cwd)
        self._last_preset = values.get("preset")
        for key, value in values.items():
            self.set_value(key, value)
        for name, on_ in enabled.items():
            self.query_one(f"#enable-{name}", Switch).value = on_
            self.enabled[name] = on_
            self.query_one(f"#body-{name}").display = on_
        self.schedule_validation()

    # ---------------------------------------------------------------- validation and preview
    def schedule_validation(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(VALIDATE_DELAY_S, self.validate_now)

    def validate_now(self) -> Any:
        """Check the form as the CLI checks a file; update the status line and the cell preview. Returns the config."""
        from bttui.config import ConfigError, config_from_dict, expand_cells

        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.validations += 1
        try:
            cfg = config_from_dict(self.form_dict(), "form", settings=self.settings)
        except (ConfigError, FormError) as exc:
            self.cfg, self.error, self.cells = None, str(exc), []
        else:
            self.cfg, self.error = cfg, None
            self.cells = expand_cells(cfg)
        self.render_status()
        self.render_preview()
        self.list_datasets_if_moved()
        return self.cfg

    def render_status(self) -> None:
        line = Text()
        if self.error is not None:
            line.append("✗ ", style="bold red")
            line.append(clean(self.error), style="red")
        else:
            cfg = self.cfg
            line.append("✓ ", style="bold green")
            line.append("valid", style="green")
            parts = []
            if cfg.pretrain is not None:
                parts.append(f"pretrain {cfg.pretrain.epochs} ep on {len(cfg.pretrain.datasets)} dataset"
                             f"{'s' if len(cfg.pretrain.datasets) != 1 else ''}")
            parts.append(f"{len(self.cells)} fine-tuning cell{'s' if len(self.cells) != 1 else ''}")
            line.append(": " + ", ".join(parts))
            if self.saved_path is not None:
                line.append(f"  saved {display_file(self.saved_path, self.cwd)}", style="dim")
        self.query_one("#new-status", Static).update(line)

    def render_preview(self) -> None:
        preview = self.query_one("#new-preview", Static)
        n = len(self.cells)
        preview.border_title = f"Cells ({n})" if self.error is None else "Cells (fix the form)"
        text = Text()
        narrow = self.size.width and self.size.width < 110
        shown = self.cells[: 2 if narrow else PREVIEW_CELLS]
        for i, cell in enumerate(shown):
            if i:
                text.append("\n")
            text.append(clean(cell.id, single_line=True))
        if n > len(shown):
            text.append(f"\n… and {n - len(shown)} more", style="dim")
        if not n:
            text.append("no fine-tuning cells" if self.error is None else "-", style="dim")
        preview.update(text)

    def on_resize(self) -> None:
        self.render_preview()

    @on(Input.Changed)
    @on(Switch.Changed)
    @on(Select.Changed)
    def field_changed(self, event: Any) -> None:
        widget_id = event.control.id or ""
        if widget_id == "new-from":
            self.source_chosen(event.value)
            return
        if widget_id.startswith("enable-"):
            name = widget_id[len("enable-"):]
            self.enabled[name] = bool(event.value)
            self.query_one(f"#body-{name}").display = bool(event.value)
            self.query_one(f"#state-{widget_id}", Label).update(section_word(bool(event.value)))
        elif not widget_id.startswith("f-"):
            return
        elif isinstance(event, Switch.Changed):
            self.query_one(f"#state-{widget_id}", Label).update(switch_word(bool(event.value)))
        elif widget_id == fid("preset") and event.value != self._last_preset:
            self.apply_preset(event.value)
        elif isinstance(event, Input.Changed) and widget_id in {fid(k) for k in (*DATASET_KEYS, GPU_KEY)}:
            self.sync_picker_from_input(widget_id)
        self.schedule_validation()

    def source_chosen(self, choice: Any) -> None:
        if choice == self.choice or not isinstance(choice, str):
            return
        cfg, error = self.load_choice(choice)
        if cfg is None:
            self.notify(clean(error or "cannot load"), severity="error", markup=False, timeout=8)
            return
        self.choice = choice
        self.fill(cfg)

    def apply_preset(self, preset: Any) -> None:
        """Picking a preset fills the keys it sets (the form spells every key out, so it would override nothing)."""
        from bttui.config import PRESETS

        self._last_preset = preset
        for key, value in (PRESETS.get(preset) or {}).items():
            if key in FIELDS:
                self.set_value(key, display_value(FIELDS[key], value, self.cwd))

    # ---------------------------------------------------------------- dataset and GPU pickers
    def list_datasets_if_moved(self) -> None:
        from bttui.tui.form import parse_value

        try:
            _, root = parse_value(FIELDS["data.root"], self.widget_value("data.root"))
        except FormError:
            return
        resolved = os.path.abspath(os.path.expanduser(str(root or "")))
        if resolved != self.listed_root:
            self.listed_root = resolved
            self.list_datasets(resolved)

    @work(thread=True, exclusive=True, group="datasets")
    def list_datasets(self, root: str) -> None:
        """Read the dataset ids and task names under the data root (info.yaml files) off the UI thread."""
        from bttui.data.reader import list_datasets
        from bttui.errors import BttuiError

        worker = get_current_worker()
        if not os.path.isdir(root):
            self.post_message(DatasetsListed(root, [], None))
            return
        try:
            infos = list_datasets(root)
        except BttuiError as exc:
            self.post_message(DatasetsListed(root, [], str(exc)))
            return
        except Exception as exc:  # an odd info.yaml must not take the form down
            self.post_message(DatasetsListed(root, [], f"{type(exc).__name__}: {exc}"))
            return
        if not worker.is_cancelled:
            found = [(i.id, i.name, [t.name for t in i.tasks]) for i in infos]
            self.post_message(DatasetsListed(root, found, None))

    def on_datasets_listed(self, message: DatasetsListed) -> None:
        if message.root != self.listed_root:
            return  # the root changed again meanwhile
        self.datasets = message.datasets
        self.data_error = message.error
        shown_root = show_path(message.root, self.cwd)
        for key in DATASET_KEYS:
            note = self.query_one(f"#note-{pick_id(key)}", Static)
            if message.error:
                note.update(Text("✗ " + clean(message.error), style="red"))
            elif not message.datasets:
                note.update(Text(f"no MIMeta data at {shown_root}", style="yellow"))
            else:
                note.update(Text(f"{len(message.datasets)} datasets at {shown_root} (space picks)", style="dim"))
            self.fill_picker(key, [(d, Text.assemble(d, ("  " + n, "dim"))) for d, n, _ in message.datasets])
        tasks = sorted({t for _, _, ts in message.datasets for t in ts})
        task_input = self.query_one("#" + fid("finetune.task"), Input)
        task_input.suggester = SuggestFromList(tasks, case_sensitive=False) if tasks else None
        doc = Text(FIELDS["finetune.task"].doc)
        if tasks:
            doc.append("; here: " + ", ".join(clean(t, single_line=True) for t in tasks), style="dim")
        self.query_one("#doc-" + fid("finetune.task"), Static).update(doc)

    def fill_picker(self, key: str, options: list[tuple[Any, Any]]) -> None:
        """Replace a picker's options; entries of the input the picker does not know stay listed as such."""
        picker = self.query_one("#" + pick_id(key), SelectionList)
        current = self._current_list(key) or []
        known = [value for value, _ in options]
        extra = [v for v in current if v not in known]
        picker.clear_options()
        rows = [(label, value, value in current) for value, label in options]
        rows += [(Text.assemble(str(v), ("  (not found here)", "yellow")), v, True) for v in extra]
        picker.add_options(rows)
        picker.display = bool(options)
        picker.styles.height = min(len(rows), 6) if rows else 0

    def _current_list(self, key: str) -> list | None:
        text = str(self.widget_value(key))
        if key == GPU_KEY and text.strip() in ("auto", '"auto"'):
            return []
        return parse_list_text(text)

    def sync_picker_from_input(self, widget_id: str) -> None:
        key = next(k for k in (*DATASET_KEYS, GPU_KEY) if fid(k) == widget_id)
        picker = self.query_one("#" + pick_id(key), SelectionList)
        current = self._current_list(key)
        if current is None or set(current) == set(picker.selected):
            return  # not an array yet, or already in step (this change came from the picker)
        for i in range(picker.option_count):
            value = picker.get_option_at_index(i).value
            if (value in current) != (value in picker.selected):
                picker.toggle(value)

    @on(SelectionList.SelectedChanged)
    def picker_changed(self, event: SelectionList.SelectedChanged) -> None:
        picker = event.selection_list
        key = next((k for k in (*DATASET_KEYS, GPU_KEY) if pick_id(k) == picker.id), None)
        if key is None:
            return
        current = self._current_list(key)
        picked = list(picker.selected)
        if current is not None and set(current) == set(picked) and key != GPU_KEY:
            return
        options = [picker.get_option_at_index(i).value for i in range(picker.option_count)]
        merged = merge_picked(current or [], options, picked)
        if key == GPU_KEY:
            text = "auto" if not merged else display_value(FIELDS[key], merged)
        else:
            text = display_value(FIELDS[key], merged)
        self.set_value(key, text)

    @work(thread=True, exclusive=True, group="gpus")
    def sample_gpus(self) -> None:
        sampler = self.app.gpus
        samples = list(sampler.sample())
        if not get_current_worker().is_cancelled:
            self.post_message(GpusSampled(samples, bool(getattr(sampler, "available", False))))

    def on_gpus_sampled(self, message: GpusSampled) -> None:
        from bttui.gpus import format_gib

        self.gpu_samples = message.samples
        note = self.query_one(f"#note-{pick_id(GPU_KEY)}", Static)
        if not message.samples:
            note.update(Text("no GPUs visible (NVML n/a): the run trains where resources.device says",
                             style="dim") if not message.available else Text("no GPUs found", style="dim"))
        else:
            note.update(Text("GPU picker: none picked = auto (most free memory)", style="dim"))
        options = []
        for s in message.samples:
            free = max(0, (s.memory_total or 0) - (s.memory_used or 0))
            label = Text.assemble(f"GPU {s.index}  ", clean(s.name, single_line=True),
                                  f"  {format_gib(free)} GiB free of {format_gib(s.memory_total)}",
                                  ("  idle" if s.idle else "", "dim"))
            options.append((s.index, label))
        self.fill_picker(GPU_KEY, options)

    # ---------------------------------------------------------------- actions
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_help(self) -> None:
        from bttui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen("new experiment", self.HELP))

    def action_launch(self) -> None:
        cfg = self.validate_now()
        if cfg is None:
            self.notify("fix the form first: " + clean(self.error or ""), severity="error", markup=False, timeout=8)
            return
        config_path = str(self.saved_path) if self.saved_path is not None and self._saved_cfg == cfg else None
        self.notify(f"launching {clean(cfg.name, single_line=True)} …", markup=False, timeout=3)
        self.launch(cfg, config_path)

    @work(thread=True, exclusive=True, group="launch")
    def launch(self, cfg: Any, config_path: str | None) -> None:
        """controls.launch creates the run and queues/starts it detached (the path of ``bttui run --detach``)."""
        from bttui.errors import BttuiError

        try:
            run_id = self.app.controls.launch(cfg, config_path)
        except BttuiError as exc:
            self.post_message(ExperimentLaunched(False, str(exc)))
        except Exception as exc:  # a launch failure must not kill the TUI; say what happened
            self.post_message(ExperimentLaunched(False, f"launch failed: {type(exc).__name__}: {exc}"))
        else:
            self.post_message(ExperimentLaunched(True, str(run_id)))

    def on_experiment_launched(self, message: ExperimentLaunched) -> None:
        if not message.ok:
            self.notify(clean(message.text), severity="error", markup=False, timeout=10)
            return
        self.launched = message.text
        self.app.notify(f"launched {message.text}; it runs in the background", markup=False, timeout=6)
        if self.app.screen is self:
            self.app.pop_screen()

    def action_save(self) -> None:
        from bttui.runs.layout import slugify
        from bttui.tui.screens.prompt import PromptScreen

        cfg = self.validate_now()
        if cfg is None:
            self.notify("fix the form first: " + clean(self.error or ""), severity="error", markup=False, timeout=8)
            return
        folder = display_file(Path(self.app.experiments_dir), self.cwd)
        self.app.push_screen(PromptScreen("Save as", f"File name in {folder}/", f"{slugify(cfg.name)}.toml"),
                             lambda name: self.save_as(name, cfg))

    def save_as(self, name: str | None, cfg: Any) -> None:
        """Write ``cfg`` as ``<experiments_dir>/<name>``; an existing file is replaced only after a yes."""
        if name is None:
            return
        name = name.strip()
        if not name.endswith(".toml"):
            name += ".toml"
        if name == ".toml" or "/" in name or "\\" in name or name.startswith("."):
            self.notify(f"{name!r} is not a plain file name; give e.g. my-experiment.toml (no folders)",
                        severity="error", markup=False, timeout=8)
            return
        path = Path(self.app.experiments_dir) / name
        if path.exists():
            from bttui.tui.screens.confirm import ConfirmScreen

            lines = [f"{display_file(path, self.cwd)} exists.", "Replace it with this form's config?"]
            self.app.push_screen(ConfirmScreen("Overwrite", lines),
                                 lambda yes: self.write_config(path, cfg) if yes else None)
            return
        self.write_config(path, cfg)

    def write_config(self, path: Path, cfg: Any) -> None:
        from bttui.config import config_to_toml
        from bttui.runs.atomic import write_text_atomic

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, config_to_toml(cfg))
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror or exc}", severity="error", markup=False, timeout=8)
            return
        self.saved_path = path
        self._saved_cfg = cfg
        value = f"file:{path}"
        if value not in self.source_paths:
            self.source_paths[value] = path
        self.notify(f"saved {display_file(path, self.cwd)}", markup=False, timeout=5)
        self.render_status()
