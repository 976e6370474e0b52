"""``python -m bttui.train RUN_DIR [--resume]``: run one training run in this process."""

import sys

from bttui.train.runner import main

if __name__ == "__main__":
    sys.exit(main())
