"""Terminal renderers shared by the CLI and the TUI: plain data in, Rich renderables out (never torch).

Submodules: ``format`` (strings only), ``glyphs``, ``confusion``, ``tables``, ``progress``.
Nothing is imported here, so ``bttui.render.format`` stays free of Rich.
"""
