"""FuseChat: knowledge fusion of chat LLMs.

Stage 1 (pairwise fusion): capture representations, align source distributions
to the pivot's vocabulary, train the pivot toward the MinCE target.
Stage 2: merge the fused targets (SCE, VaRM, and mergekit's methods).
"""

__version__ = "0.1.0"
