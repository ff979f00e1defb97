"""Pure computational rules shared by the pipelines (no I/O, no model loading)."""
