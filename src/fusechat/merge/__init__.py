"""Stage 2: merge the pairwise-fused targets (docs/design.md 9).

``sce.fusechat_sce`` and ``varm.fusechat_varm`` are the per-tensor kernels (pure torch);
``registry`` is the table of fusechat-merge's methods (``fusechat_sce``, ``fusechat_varm``: one
entry each, registered with mergekit by name); ``cli`` is
``fusechat-merge`` (``mergekit-yaml`` with those methods); ``varm_analysis`` writes VaRM's
per-target statistics. Importing this package does not import mergekit.
"""

from .sce import fusechat_sce, sce_weights
from .varm import fusechat_varm, group_key, varm_weights

__all__ = ["fusechat_sce", "sce_weights", "fusechat_varm", "group_key", "varm_weights"]
