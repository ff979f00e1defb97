"""Implicit model fusion (docs/design.md 13): FuseChat-3.0's sample-score-select pipeline with SFT then DPO,
and WRPO. Modules, one per stage: decode, post_process, verify, annotate, build, sft, dpo, wrpo_trainer;
the losses are pure functions in ``losses``; ``formats`` reads and converts the files between stages;
``cli`` holds the console scripts."""
