"""FuseLLM (docs/design.md 12): plain-text fusion of several foundation models into one pivot.

One module per data stage, pure functions at the core; the scripts under ``FuseLLM/src/utils/``
are thin shells over them:

    split_long_text   12.1  cut texts longer than block_size - 48 tokens for any of the three tokenizers
    representation    12.2  per model: tokenize (text + EOS, no BOS), forward, top-k logits, metric_ce
    vocab_mapping     12.3  MinED over the vocabularies, source piece -> pivot piece (JSON)
    token_alignment   12.4  DTW (diagonal-up-left) and distribution alignment into ``*_k`` columns
    packing           12.5  pack every column into model_max_length rows, token-weighted metrics

and the training and evaluation side (``FuseLLM/src/train.py``, ``scripts/eval_fusellm.sh``):

    distill           12.6.3-4  bf16 rewards, MinCE / weighted teacher targets on top-k lists, loss weights
    collator          12.6.2    packed batches with one sparse target per position
    schedule          12.6.5    the optimizer and WarmupDecayLR schedule the released DeepSpeed config ran
    train_arguments, trainer, train   12.6  train.py's flags, the Trainer with the distill loss, main()
    evaluation        12.9      lm-evaluation-harness benchmarks beside the published figures
    demo                        the summary of a FuseLLM run
"""
