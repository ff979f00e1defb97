"""Different-vocabulary alignment (docs/design.md 6): token alignment, vocabulary mapping, distributions."""
