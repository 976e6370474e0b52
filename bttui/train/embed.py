"""2-D embeddings (t-SNE, UMAP) of a cell's test features, stored as ``embedding_<method>.npz``.

t-SNE after van der Maaten & Hinton 2008 (scikit-learn), UMAP after McInnes et
al. 2018 (umap-learn); the paper shows t-SNE of the 512-d ResNet-18 features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bttui.errors import BttuiError

METHODS = ("tsne", "umap")
MAX_POINTS = 5000  # t-SNE is O(N log N) but still minutes beyond this; a stratified sample keeps it under ~30 s


def _subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` points, every class kept in proportion (sorted)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(round(limit * len(idx) / len(labels))))
        keep.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def embed_2d(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """[N, 2] float32 coordinates of ``features`` [N, D] by ``method`` (tsne | umap)."""
    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if n < 4:
        raise BttuiError(f"a {method} embedding needs at least 4 test images, got {n}")
    if method == "tsne":
        from sklearn.manifold import TSNE

        # perplexity must stay below the number of points; 30 is the usual value
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x).astype(np.float32)
    if method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise BttuiError("finetune.embeddings lists umap but umap-learn is not installed "
                             "(pip install umap-learn), or drop umap from finetune.embeddings") from exc
        reducer = umap.UMAP(n_components=2, n_neighbors=int(min(15, n - 1)), random_state=seed)
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
    raise BttuiError(f"unknown embedding method {method!r}; valid: {', '.join(METHODS)}")


def write_embeddings(cell_dir: str | os.PathLike, features: np.ndarray, labels: np.ndarray,
                     class_names: Sequence[str], methods: Sequence[str], seed: int = 0) -> list[str]:
    """Write ``embedding_<method>.npz`` (coords [N,2], labels [N], class_names, indices) per method; returns the methods written.

    ``indices`` are positions in the cell's test features (all of them unless more than MAX_POINTS).
    """
    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.int64)
    keep = _subsample(labels, MAX_POINTS, seed)
    written = []
    for method in methods:
        coords = embed_2d(np.asarray(features)[keep], method, seed)
        tmp = cell_dir / f".embedding_{method}.{os.getpid()}.tmp.npz"
        np.savez_compressed(tmp, coords=coords, labels=labels[keep], class_names=np.asarray(list(class_names), dtype=str),
                            indices=keep.astype(np.int64), method=np.asarray(method))
        os.replace(tmp, cell_dir / f"embedding_{method}.npz")
        written.append(method)
    return written


def read_embedding(path: str | os.PathLike) -> dict:
    """An embedding file as plain data: {"coords": [N,2], "labels": [N], "class_names": [...], "method": str}."""
    with np.load(path, allow_pickle=False) as z:
        return {"coords": z["coords"], "labels": z["labels"], "class_names": [str(c) for c in z["class_names"]],
                "method": str(z["method"]) if "method" in z else Path(path).stem.split("_", 1)[-1]}
