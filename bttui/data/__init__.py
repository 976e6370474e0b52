"""MIMeta-format data without torch: the synthetic generator (synth) and the light reader (reader)."""

from __future__ import annotations

# Submodules are imported by name (``from bttui.data import reader``) so that
# importing the package itself stays free of numpy/h5py for ``bttui --help``.
__all__ = ["reader", "synth"]
