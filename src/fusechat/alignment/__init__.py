"""Different-vocabulary alignment (DESIGN.md 6): token alignment, vocabulary mapping, distributions."""
