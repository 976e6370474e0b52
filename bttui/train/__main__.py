"""``python -m bttui.train RUN_DIR [--resume]``: run one training run in this process."""

import sys

from bttui.train.runner import main

if __name__ == "__main__":
    code = main()
    from bttui.train.distributed import env_world

    if env_world()[0] > 1:
        # Under torchrun: leave without interpreter teardown, where gloo's threads can abort a
        # finished rank (see bttui.train.distributed.exit_now); the run's files are all written.
        from bttui.train.distributed import exit_now

        exit_now(code)
    sys.exit(code)
