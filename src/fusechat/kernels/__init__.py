"""The computations both wings share, as pure functions (no I/O, no model loading): nothing here
imports ``training``, ``alignment``, ``fusellm``, ``cli`` or the drivers, and both wings import
from here. The released FuseChat/FuseLLM differences are parameters (docs/kernels.md).

- ``dtw``: token alignment of a sequence pair (DTW over edit distances), FuseChat's and FuseLLM's tie order
- ``mined``: the minimum-edit-distance search of vocabulary pieces, and word-start markers
- ``align_methods``: the registry of align methods (how a source's top-k lists come into the pivot's)
- ``distribution``: the rows each pivot position takes, candidates mapped into the pivot's vocabulary
- ``topk``: a batch's token columns padded and its top-k columns as [B, T, K] targets
- ``teacher_rules``: the registry of teacher rules (candidates' rewards -> weights over the candidates)
- ``losses``: LM and distillation losses toward sparse top-k targets
- ``checks``: flag values both wings validate the same way
"""
