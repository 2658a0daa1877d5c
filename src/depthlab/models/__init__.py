"""Model zoo: registry plus one module per model family (imported lazily by the registry)."""
from depthlab.models.registry import (
    WeightsInfo,
    create_model,
    get_weights_info,
    list_models,
    register_model,
    resolve_model,
)

__all__ = ["WeightsInfo", "create_model", "get_weights_info", "list_models", "register_model", "resolve_model"]
