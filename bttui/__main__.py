"""`python -m bttui`: the same entry point as the `bttui` console script."""

from bttui.cli import main

if __name__ == "__main__":
    main()
