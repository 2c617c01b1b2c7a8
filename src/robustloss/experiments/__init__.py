"""Experiments: YAML configs with grids and scale presets, a SQLite results store, and the runner."""
