"""The computations both wings share, as pure functions (no I/O, no model loading): nothing here imports ``training``,
``alignment``, ``fusellm``, ``cli`` or the drivers, and both wings import from here.

- ``dtw``: token alignment of a sequence pair (DTW over edit distances), FuseChat's and FuseLLM's tie order
- ``mined``: the minimum-edit-distance search of a piece in a vocabulary, and word-start markers
- ``align_methods``: the registry of align methods (how a source's top-k lists are moved into the pivot's)
- ``distribution``: candidate lists mapped into the pivot's vocabulary and placed at its positions
- ``topk``: top-k columns of a batch read from Arrow (with ``fusechat.arrow``) as [B, T, K] targets
- ``teacher_rules``: the registry of teacher rules (candidates' rewards -> weights over the candidates)
- ``losses``: LM and distillation losses toward sparse top-k targets
- ``checks``: flag values both wings validate the same way
- ``columns``: column names of the saved sets
"""
