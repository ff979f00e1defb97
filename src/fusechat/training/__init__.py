"""Stage 1 training (docs/design.md 8): arguments, sparse fuse loss, collator, training sets, Trainer, main()."""
