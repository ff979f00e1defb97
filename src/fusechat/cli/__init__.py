"""Argument parsing and wiring for the standalone scripts in ``FuseChat/train/``."""
