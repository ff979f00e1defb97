"""Stage 1 training (DESIGN.md 8): arguments, sparse fuse loss, collator, training sets, Trainer, main()."""
