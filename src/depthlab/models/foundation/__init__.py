"""Foundation depth models as thin adapters over transformers / diffusers.

* :mod:`.hf_depth` -- Depth Anything V2 (relative and metric), ZoeDepth, DPT / MiDaS v3 (transformers);
* :mod:`.depth_pro` -- Depth Pro (transformers), metric with a field-of-view head;
* :mod:`.marigold` -- Marigold depth (diffusers ``MarigoldDepthPipeline``);
* :mod:`.convert_dav2` -- official Depth-Anything-V2 ``.pth`` keys -> transformers layout.

Importing this package registers every variant without importing transformers or diffusers; building
one without them installed raises an ImportError that says which extra to install
(``pip install 'depthlab[hf]'``). See docs/foundation.md for output kinds, weights and licences.
"""
from depthlab.models.foundation import depth_pro, hf_depth, marigold  # noqa: F401  (registers the variants)
from depthlab.models.foundation.convert_dav2 import DAV2ConversionError, is_official_dav2, official_to_hf
from depthlab.models.foundation.depth_pro import DepthProModel
from depthlab.models.foundation.hf_depth import DPTDepthModel, HFDepthModel, ResizePolicy, ZoeDepthModel
from depthlab.models.foundation.marigold import MarigoldDepthModel

__all__ = [
    "HFDepthModel", "ZoeDepthModel", "DepthProModel", "DPTDepthModel", "MarigoldDepthModel", "ResizePolicy",
    "official_to_hf", "is_official_dav2", "DAV2ConversionError",
]
