"""The paper's published results as data, with the protocol they came from (FACTS.md sections 1-2; stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PaperTable:
    """Test accuracies (%) of one dataset: curves[(init, strategy)] = {label_fraction: accuracy}."""

    dataset: str
    task: str
    n_classes: int
    curves: dict[tuple[str, str], dict[float, float]]
    protocol: dict[str, Any]
    notes: tuple[str, ...]
    per_class: dict[tuple[str, str, float], dict[str, float]] = field(default_factory=dict)

    def fractions(self) -> list[float]:
        """Every label fraction the paper reports for this dataset, ascending."""
        return sorted({f for curve in self.curves.values() for f in curve})


_BT_LIN, _BT_FULL = ("barlow_twins", "linear"), ("barlow_twins", "full")
_IN_LIN, _IN_FULL = ("imagenet", "linear"), ("imagenet", "full")

# What the authors' public code did; the paper's text says otherwise (FACTS.md section 2).
AUTHORS_CODE_NOTES = (
    "The authors' code used lightly's loss with lambda 5e-3 (not 0.0051), Adam lr 0.03 with weight decay 0.03 "
    "and no schedule, and config batch 64.",
    "Both views used the same SimCLR-style augmentation (blur p=0.5, no solarization), not the asymmetric "
    "Barlow Twins recipe.",
    "All images were converted to grayscale, CRC histology included.",
    "A random 80/10/10 split (seed 42) replaced MIMeta's predefined splits.",
    "The readout applied softmax before cross-entropy (double softmax) and the ImageNet baseline was fed "
    "without ImageNet normalisation.",
)

PAPER: dict[str, PaperTable] = {
    "crc": PaperTable(
        dataset="crc", task="tissue class", n_classes=9,
        curves={
            _BT_LIN: {0.005: 91.25, 0.01: 93.26, 0.1: 95.78, 0.25: 96.29, 0.5: 96.43, 1.0: 96.64},
            _BT_FULL: {0.005: 88.93, 0.01: 92.03, 0.1: 96.34, 0.25: 96.42, 0.5: 97.34, 1.0: 97.97},
            _IN_LIN: {0.005: 85.91, 0.01: 88.66, 0.1: 92.40, 0.25: 93.11, 0.5: 93.49, 1.0: 93.61},
            _IN_FULL: {0.005: 89.30, 0.01: 93.00, 0.1: 95.98, 0.25: 94.57, 0.5: 97.74, 1.0: 96.86},
        },
        protocol={"split_policy": "random", "grayscale": True, "test_size": None, "seeds": 1,
                  "pretrain_datasets": ["crc"], "image_size": 224},
        notes=(
            "CRC: 107,180 images (NCT-CRC-HE-100K + CRC-VAL-HE-7K), 9 tissue classes, 224x224 H&E.",
            "The paper states MIMeta's splits and colour; the authors' code used a random 80/10/10 split "
            "and grayscale, so these numbers most likely come from that protocol.",
            "One seed per number; no confidence intervals were reported.",
        ) + AUTHORS_CODE_NOTES,
        per_class={("barlow_twins", "linear", 1.0): {
            "adipose": 99.54, "background": 99.83, "debris": 97.08, "lymphocytes": 99.68, "mucus": 95.72,
            "smooth muscle": 93.68, "normal colon mucosa": 95.62, "cancer-associated stroma": 90.39,
            "colorectal adenocarcinoma epithelium": 97.71}},
    ),
    "organs_sagittal": PaperTable(
        dataset="organs_sagittal", task="organ label", n_classes=11,
        curves={
            _BT_LIN: {0.1: 63.41, 0.25: 71.34, 0.5: 77.44, 1.0: 79.27},
            _BT_FULL: {0.1: 68.9, 0.25: 75.0, 0.5: 78.66, 1.0: 78.05},
            _IN_LIN: {0.1: 54.27, 0.25: 48.78, 0.5: 47.56, 1.0: 50.0},
            _IN_FULL: {0.1: 62.2, 0.25: 71.95, 0.5: 79.88, 1.0: 76.22},
        },
        protocol={"split_policy": "random", "grayscale": True, "test_size": 164, "seeds": 1,
                  "pretrain_datasets": ["organs_axial", "organs_coronal", "organs_sagittal"], "image_size": 224},
        notes=(
            "Sagittal organ CT slices, 11 organ classes, 224x224 grayscale; Barlow Twins pretrained on the three "
            "views concatenated (4,935 images).",
            "All sixteen organ accuracies are exact multiples of 1/164 (63.41 = 104/164, 79.27 = 130/164, "
            "50 = 82/164): they come from a ~164-image random test split, not MIMeta's 618-image sagittal test "
            "split. One test image is 0.61 points; the standard error is about +/-3 points.",
            "One seed per number; no confidence intervals were reported.",
        ) + AUTHORS_CODE_NOTES,
    ),
}

# Aliases users may type after --paper.
PAPER_ALIASES = {"organs": "organs_sagittal", "sagittal": "organs_sagittal", "organs_sagittal": "organs_sagittal",
                 "crc": "crc"}

# CRC class names as MIMeta spells them may differ from the paper's short names; matched case-insensitively
# on these abbreviations too (NCT-CRC-HE-100K codes).
CLASS_ALIASES = {"adi": "adipose", "back": "background", "deb": "debris", "lym": "lymphocytes", "muc": "mucus",
                 "mus": "smooth muscle", "norm": "normal colon mucosa", "str": "cancer-associated stroma",
                 "tum": "colorectal adenocarcinoma epithelium"}


def paper_table(name: str) -> PaperTable:
    """The paper's table for ``crc`` or ``organs_sagittal`` (aliases: organs, sagittal); KeyError otherwise."""
    return PAPER[PAPER_ALIASES.get(name.strip().lower(), name)]


def paper_init(init: str) -> str | None:
    """The paper's init a run's init compares with: Barlow Twins backbones (own or another run's) or ImageNet."""
    if init.startswith(("barlow_twins", "run:")):
        return "barlow_twins"
    if init == "imagenet":
        return "imagenet"
    return None


def paper_per_class(dataset: str, init: str, strategy: str, fraction: float) -> dict[str, float] | None:
    """The paper's per-class accuracies (%) for a run's (dataset, init, strategy, label fraction), keyed by
    canonical class name; None where the paper reports none (it does for a few combinations only)."""
    table = PAPER.get(dataset)
    p_init = paper_init(init)
    if table is None or p_init is None:
        return None
    classes = table.per_class.get((p_init, strategy, float(fraction)))
    return {canonical_class(k): v for k, v in classes.items()} if classes else None


def canonical_class(name: str) -> str:
    """A class name normalised for matching the paper's per-class numbers (lowercase, NCT codes expanded)."""
    text = " ".join(str(name).strip().lower().replace("_", " ").split())
    return CLASS_ALIASES.get(text, text)


def protocol_differences(table: PaperTable, config: dict[str, Any] | None, n_test: int | None) -> list[str]:
    """Sentences naming where a run's protocol differs from the one the paper's numbers came from."""
    out: list[str] = []
    data = (config or {}).get("data") or {}
    policy = data.get("split_policy", "mimeta")
    if policy != table.protocol["split_policy"]:
        out.append(f"split policy: this run used {policy!r} splits; the paper's numbers come from a "
                   f"{table.protocol['split_policy']!r} split (the authors' code).")
    gray = bool(data.get("grayscale", False))
    if gray != table.protocol["grayscale"]:
        out.append(f"colour: this run {'converted images to grayscale' if gray else 'kept colour'}; the authors' "
                   f"code {'converted everything to grayscale' if table.protocol['grayscale'] else 'kept colour'}.")
    want = table.protocol.get("test_size")
    if want and n_test and abs(n_test - want) > max(2, want * 0.05):
        out.append(f"test-set size: {n_test} test images here vs about {want} behind the paper's numbers "
                   f"(one image = {100 / want:.2f} points there, {100 / n_test:.2f} here).")
    size = data.get("image_size")
    if size and size != table.protocol.get("image_size"):
        out.append(f"image size: {size} px here vs {table.protocol['image_size']} px in the paper.")
    return out
