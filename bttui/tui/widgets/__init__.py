"""Widgets and Rich renderings used by the bttui screens."""
