"""Thin Hydra entry points: compose the config, instantiate, call."""
