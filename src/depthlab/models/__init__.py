"""Model zoo: the registry plus one module per model family, all imported here (as timm does).

A family that fails to import fails ``import depthlab.models`` with its own traceback. Families import
their heavy optional libraries (transformers, diffusers) inside their constructors, never at import.
"""
from depthlab.models.registry import (
    WeightsInfo,
    create_model,
    get_weights_info,
    list_models,
    register_model,
    resolve_model,
)

# the families (each registers its variants when imported); add a new family here
from depthlab.models import fastdepth, foundation, leve, nyu_study, smp_unet, unet  # noqa: E402, F401  isort: skip

__all__ = ["WeightsInfo", "create_model", "get_weights_info", "list_models", "register_model", "resolve_model"]
