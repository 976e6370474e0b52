"""bttui: Barlow Twins pretraining and fine-tuning on medical images, run and studied from the terminal."""

__version__ = "0.1.0"
