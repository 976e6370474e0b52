"""The torch world: Barlow Twins pretraining and fine-tuning, run as ``python -m bttui.train RUN_DIR``."""
