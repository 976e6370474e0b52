"""The experiment config schema: typed dataclasses whose defaults are the paper's settings.

Every field carries a one-line ``doc`` in its metadata; the README's config
reference, ``bttui config show`` and the TUI form all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def f(default: Any = None, doc: str = "", *, factory: Any = None, choices: tuple | None = None,
      minimum: float | None = None, maximum: float | None = None, exclusive_min: bool = False) -> Any:
    """A dataclass field with a one-line doc and optional validation bounds."""
    meta = {"doc": doc, "choices": choices, "min": minimum, "max": maximum, "exclusive_min": exclusive_min}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Where the MIMeta data lives and how images are prepared."""

    root: str = f("data/mimeta", "MIMeta root directory (relative paths resolve against the working directory)")
    image_size: int = f(224, "Side length in pixels images are resized to", minimum=8, maximum=1024)
    synthesize: bool = f(False, "Demos only: generate MIMeta-format synthetic data if `root` is missing")
    synth_per_class: int = f(40, "Demos only: synthetic images per class and dataset when synthesizing", minimum=4, maximum=100000)
    split_policy: str = f("mimeta", "Splits: MIMeta's `splits/`, its `original_splits/`, or the authors' random 80/10/10 (seed 42)",
                          choices=("mimeta", "original", "random"))
    grayscale: bool = f(False, "Convert every image to grayscale (what the authors' code did), replicated to 3 channels")


@dataclass
class PretrainConfig:
    """The Barlow Twins pretraining stage (absent section = no pretraining)."""

    datasets: list[str] = f(doc="MIMeta dataset ids concatenated for pretraining (labels unused)",
                           factory=lambda: ["organs_axial", "organs_coronal", "organs_sagittal"])
    splits: list[str] = f(doc="Splits pretraining reads (`train`, optionally `val`; never `test`)", factory=lambda: ["train"])
    backbone: str = f("resnet18", "Backbone architecture", choices=("resnet18", "resnet50"))
    projector: list[int] = f(doc="Projector layer widths (Linear-BN-ReLU between, last Linear plain)",
                             factory=lambda: [2048, 2048, 2048])
    lambd: float = f(0.0051, "Weight of the off-diagonal (redundancy) term of the Barlow Twins loss", minimum=0.0)
    batch_size: int = f(256, "Images per step (global, across all devices)", minimum=2)
    epochs: int = f(1000, "Pretraining epochs", minimum=1)
    optimizer: str = f("adam", "Optimizer", choices=("adam", "lars", "sgd"))
    lr: float = f(0.03, "Learning rate (for LARS: per 256 images, scaled by batch_size/256)", minimum=0.0, exclusive_min=True)
    bias_lr: float = f(0.0048, "LARS only: learning rate of biases and norm parameters, per 256 images", minimum=0.0)
    momentum: float = f(0.9, "Momentum for SGD and LARS", minimum=0.0, maximum=1.0)
    weight_decay: float = f(1e-6, "Weight decay (the paper leaves it open; the reference recipe uses 1e-6)", minimum=0.0)
    schedule: str = f("cosine", "Learning-rate schedule per step: linear warmup then cosine, or constant",
                      choices=("cosine", "constant"))
    warmup_epochs: float = f(10, "Linear warmup length in epochs (cosine schedule)", minimum=0.0)
    min_lr_ratio: float = f(0.001, "Final learning rate as a fraction of the base rate (cosine schedule)", minimum=0.0, maximum=1.0)
    augment: str = f("barlow_twins", "View recipe: asymmetric Barlow Twins views or symmetric SimCLR-style views",
                     choices=("barlow_twins", "simclr"))
    precision: str = f("auto", "Numeric precision: auto (bf16 on CUDA, fp32 on CPU), bf16, fp16 or fp32",
                       choices=("auto", "bf16", "fp16", "fp32"))
    channels_last: bool = f(True, "Use channels_last memory format on CUDA")
    compile: bool = f(False, "Compile the model with torch.compile")
    checkpoint_every: int = f(10, "Epochs between checkpoints (one is always written at the end)", minimum=1)
    keep_last: int = f(2, "Periodic checkpoints kept besides the final one", minimum=1)
    log_every: int = f(10, "Steps between step events", minimum=1)
    knn_every: int = f(1, "Epochs between online kNN accuracy checks on the validation split (0 = never)", minimum=0)


@dataclass
class FinetuneConfig:
    """Fine-tuning cells: datasets x init x strategy x label_fractions x seeds."""

    datasets: list[str] = f(doc="MIMeta dataset ids fine-tuned on; each gets its own cells",
                            factory=lambda: ["organs_sagittal"])
    task: str | None = f(None, "Task name (default: each dataset's first task)")
    init: list[str] = f(doc="Backbone inits: random | imagenet | barlow_twins | run:<id> | checkpoint:<path> (optionally @epoch=N)",
                        factory=lambda: ["barlow_twins", "imagenet"])
    strategy: list[str] = f(doc="Strategies: linear (readout only) | full | surgical:<layers>",
                            factory=lambda: ["linear", "full"])
    label_fractions: list[float] = f(doc="Fractions of the training split's labels used, each in (0, 1]",
                                     factory=lambda: [0.1, 0.25, 0.5, 1.0])
    seeds: list[int] = f(doc="Fine-tuning seeds; each combination runs once per seed", factory=lambda: [0])
    epochs: int = f(100, "Fine-tuning epochs per cell (best epoch chosen on the validation split)", minimum=1)
    batch_size: int = f(128, "Fine-tuning batch size", minimum=2)
    lr: float = f(1e-4, "Fine-tuning learning rate (Adam)", minimum=0.0, exclusive_min=True)
    weight_decay: float = f(0.0, "Fine-tuning weight decay", minimum=0.0)
    patience: int = f(10, "Early stopping: epochs without validation improvement before stopping (0 = off)", minimum=0)
    probe: str = f("sgd", "Linear readout training: sgd (epochs, as the paper) or lbfgs (fast, on frozen features)",
                   choices=("sgd", "lbfgs"))
    probe_layers: list[str] = f(doc="Stages probed layer-wise (e.g. layer1..layer4); empty = none", factory=list)
    imagenet_weights: str | None = f(None, "Path of a torchvision ResNet state dict for offline boxes (init = imagenet)")
    embeddings: list[str] = f(doc="Embeddings of the test features stored per cell: tsne, umap", factory=lambda: ["tsne"])


@dataclass
class ResourcesConfig:
    """What the run asks the machine for."""

    device: str = f("auto", "Where to train: auto (CUDA if present), cuda or cpu", choices=("auto", "cuda", "cpu"))
    devices: int = f(1, "GPUs per node (more than 1 runs under torchrun with DDP)", minimum=1)
    nodes: int = f(1, "Nodes (multi-node runs need a launcher such as Slurm)", minimum=1)
    gpus: Any = f("auto", "GPU indices to use, or auto (most free memory)")
    threads: int = f(0, "CPU threads for torch (0 = library default)", minimum=0)


@dataclass
class HealthConfig:
    """Representation-collapse alarm."""

    on_collapse: str = f("warn", "What a collapse alarm does: warn, or stop the run as failed", choices=("warn", "stop"))
    min_std: float = f(1e-3, "Collapse when the mean per-dimension embedding std falls below this", minimum=0.0)
    min_rank_ratio: float = f(0.01, "Collapse when effective rank / dimension falls below this", minimum=0.0, maximum=1.0)


@dataclass
class ExperimentConfig:
    """One experiment: an optional pretraining stage and a grid of fine-tuning cells."""

    name: str = f("experiment", "Run name (shown in lists; slugged into the run id)")
    seed: int = f(0, "Pretraining seed")
    preset: str | None = f(None, "Named recipe the explicit keys override: paper, authors-code, reference",
                           choices=(None, "paper", "authors-code", "reference"))
    description: str = f("", "Free text shown with the run")
    on_finish: str | None = f(None, "Shell command run when the run ends, with BTTUI_RUN_ID and BTTUI_STATUS set")
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "Data"})
    pretrain: PretrainConfig | None = field(default_factory=PretrainConfig, metadata={"doc": "Pretraining stage"})
    finetune: FinetuneConfig | None = field(default_factory=FinetuneConfig, metadata={"doc": "Fine-tuning cells"})
    resources: ResourcesConfig = field(default_factory=ResourcesConfig, metadata={"doc": "Resources"})
    health: HealthConfig = field(default_factory=HealthConfig, metadata={"doc": "Health checks"})


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "resources": ResourcesConfig,
    "health": HealthConfig,
}
OPTIONAL_SECTIONS = ("pretrain", "finetune")
