"""Stage 2: merge the pairwise-fused targets (DESIGN.md 9).

``sce.fusechat_sce`` and ``varm.fusechat_varm`` are the per-tensor kernels (pure torch);
``registry`` registers them with mergekit as ``fusechat_sce`` and ``fusechat_varm``; ``cli`` is
``fusechat-merge`` (``mergekit-yaml`` with those methods); ``varm_analysis`` writes VaRM's
per-target statistics. Importing this package does not import mergekit.
"""

from .sce import fusechat_sce, sce_weights
from .varm import fusechat_varm, group_key, varm_weights

__all__ = ["fusechat_sce", "sce_weights", "fusechat_varm", "group_key", "varm_weights"]
