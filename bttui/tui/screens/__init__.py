"""The screens of the bttui TUI: runs (home), run detail, results, help."""
