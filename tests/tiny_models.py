"""Tiny random configurations of the foundation adapters (no download), and the per-model hooks of
tests/test_models_all.py. Test-only: library code never reads them.

* ``TEST_KWARGS: dict[str, dict]`` -- kwargs for ``create_model`` in the every-model test (a tiny variant);
* ``TEST_SLOW: set[str]`` -- model names whose checks only run with ``-m slow``;
* ``TEST_SIZES: dict[str, list[tuple[int, int]]]`` -- input sizes to use instead of the defaults;
* ``TEST_NO_BACKWARD: set[str]`` -- models whose forward is not meant to be differentiated (a diffusion
  sampler): the backward check is skipped for them, with that reason.
"""
from depthlab.models.foundation.hf_depth import MIDAS31_VARIANTS

TINY_DAV2 = {"backbone_config": {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
                                 "out_indices": [1, 2, 3, 4], "image_size": 70},
             "reassemble_hidden_size": 32, "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16,
             "head_hidden_size": 8}
_TINY_BEIT = {"model_type": "beit", "image_size": 64, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 4,
              "num_attention_heads": 2, "intermediate_size": 64, "use_relative_position_bias": True,
              "reshape_hidden_states": False, "out_features": ["stage1", "stage2", "stage3", "stage4"]}
TINY_ZOEDEPTH = {"backbone_config": _TINY_BEIT, "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16,
                 "bottleneck_features": 16, "num_relative_features": 8, "bin_embedding_dim": 8,
                 "num_attractors": [4, 2, 2, 1]}
# transformers' ZoeDepth hard-codes 4 patch-transformer layers and a 128-wide router input
TINY_ZOEDEPTH_MULTI = {**TINY_ZOEDEPTH, "num_patch_transformer_layers": 4, "patch_transformer_hidden_size": 128,
                       "patch_transformer_intermediate_size": 16, "patch_transformer_num_attention_heads": 2}
TINY_DPT = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
            "image_size": 64, "backbone_out_indices": [0, 1, 2, 3], "neck_hidden_sizes": [8, 16, 32, 32],
            "fusion_hidden_size": 16}
TINY_DPT_HYBRID = {**TINY_DPT, "backbone_featmap_shape": [1, 32, 4, 4],
                   "backbone_config": {"model_type": "bit", "depths": [1, 1, 1], "hidden_sizes": [8, 16, 32],
                                       "embedding_size": 8, "num_groups": 4, "layer_type": "bottleneck",
                                       "global_padding": "same", "embedding_dynamic_padding": True,
                                       "out_features": ["stage1", "stage2", "stage3"]}}

_TINY_NECK = {"neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16}
TINY_DPT_BEIT = {"backbone_config": {**_TINY_BEIT, "image_size": 64}, **_TINY_NECK}
TINY_DPT_SWINV2 = {"backbone_config": {"model_type": "swinv2", "image_size": 64, "patch_size": 4, "embed_dim": 8,
                                       "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4,
                                       "pretrained_window_sizes": [0, 0, 0, 0],
                                       "out_features": ["stage1", "stage2", "stage3", "stage4"]},
                   "neck_hidden_sizes": [8, 16, 32, 64], "fusion_hidden_size": 16}

TEST_KWARGS = {
    **{f"depth_anything_v2_{v}": {"config_overrides": TINY_DAV2} for v in ("vits", "vitb", "vitl")},
    **{f"depth_anything_v1_{v}": {"config_overrides": TINY_DAV2} for v in ("vits", "vitb", "vitl")},
    **{f"midas_dpt_{b}_{s}_{side}": {"config_overrides": TINY_DPT_BEIT if b == "beit" else TINY_DPT_SWINV2,
                                     "input_size": 64} for b, s, side in MIDAS31_VARIANTS},
    **{f"depth_anything_v2_metric_{d}_{v}": {"config_overrides": TINY_DAV2}
       for d in ("hypersim", "vkitti") for v in ("vits", "vitb", "vitl")},
    "zoedepth_nyu": {"config_overrides": TINY_ZOEDEPTH, "input_size": [32, 48]},
    "zoedepth_kitti": {"config_overrides": TINY_ZOEDEPTH, "input_size": [32, 48]},
    "zoedepth_nyu_kitti": {"config_overrides": TINY_ZOEDEPTH_MULTI, "input_size": [32, 48]},
    "midas_dpt_large": {"config_overrides": TINY_DPT, "input_size": 64},
    "midas_dpt_hybrid": {"config_overrides": TINY_DPT_HYBRID, "input_size": 64},
}
# DPT: the hybrid ViT only takes its configured image size, the plain ViT only square token grids
TEST_SIZES = {"midas_dpt_hybrid": [(64, 64)], "midas_dpt_large": [(64, 64), (96, 96)],
              **{f"midas_dpt_{b}_{s}_{side}": [(64, 64)] for b, s, side in MIDAS31_VARIANTS}}

# A tiny random Marigold. Its forward runs the diffusers pipeline, which is inference-only (no autograd graph),
# so the generic backward check does not apply to it.
TINY_MARIGOLD = {
    "unet": {"sample_size": 16, "block_out_channels": [8, 16], "layers_per_block": 1,
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 16,
             "attention_head_dim": 2, "norm_num_groups": 4},
    "vae": {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1, "norm_num_groups": 4,
            "sample_size": 32},
    "text_embedding": [2, 16],
}
TEST_KWARGS["marigold_depth"] = {"config_overrides": TINY_MARIGOLD, "num_inference_steps": 1,
                                 "processing_resolution": 32}

# A tiny random Depth Pro (three 2-layer DINOv2s at 32 px, 2 x 2 tokens).
# dinov2 patch 16 on 32-px patches keeps Depth Pro's output size equal to its input size (4 x patch_size).
_TINY_DINO = {"model_type": "dinov2", "image_size": 32, "patch_size": 16, "hidden_size": 16, "num_hidden_layers": 2,
              "num_attention_heads": 2, "mlp_ratio": 2, "layerscale_value": 1.0}
TINY_DEPTH_PRO = {"patch_size": 32, "fusion_hidden_size": 16, "intermediate_hook_ids": [1, 0],
                  "intermediate_feature_dims": [8, 8], "scaled_images_feature_dims": [16, 16, 8],
                  "merge_padding_value": 1, "num_fov_head_layers": 1, "image_model_config": _TINY_DINO,
                  "patch_model_config": _TINY_DINO, "fov_model_config": _TINY_DINO}
TEST_KWARGS["depth_pro"] = {"config_overrides": TINY_DEPTH_PRO, "fov_deg": 60.0}

TEST_NO_BACKWARD = {"marigold_depth"}
TEST_SLOW: set[str] = set()


def offline_hub_load(monkeypatch, name: str, **kwargs):
    """``create_model(name, pretrained=True, **kwargs)`` with the hub offline (HF_HUB_OFFLINE=1) and an empty cache:
    -> (the WeightsUnavailableError's message, the arguments transformers' ``from_pretrained`` was called with)."""
    import pytest
    import transformers

    import depthlab
    from depthlab.errors import WeightsUnavailableError
    from depthlab.models import weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights.hub_unreachable.cache_clear()
    seen = {}

    def fake_from_pretrained(source, **kw):
        seen.update(kw, source=source)
        raise OSError("not in the cache")

    monkeypatch.setattr(transformers.AutoModelForDepthEstimation, "from_pretrained", fake_from_pretrained)
    try:
        with pytest.raises(WeightsUnavailableError) as err:
            depthlab.create_model(name, pretrained=True, **kwargs)
    finally:
        weights.hub_unreachable.cache_clear()
    return str(err.value), seen


def rel_diff(a, b) -> float:
    """Largest absolute difference relative to the largest magnitude of ``b`` (shapes must match)."""
    import torch

    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max() / b.abs().max())


def rgb_uint8(h: int, w: int, seed: int = 0):
    """A smooth-ish random RGB image (HxWx3 uint8)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
    big = np.kron(small, np.ones((4, 4, 1)))[:h, :w]
    return np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)


def ramp_model(kind: str = "metric"):
    """A toy depth model: depth = 3 x red channel + 1 (``output_kind`` ``kind``, multiple of 8)."""
    import torch.nn as nn

    from depthlab.models.registry import WeightsInfo

    class Ramp(nn.Module):
        def forward(self, x):
            return {"depth": x[:, :1] * 3 + 1}

    model = Ramp()
    model.depth_info = WeightsInfo(output_kind=kind, multiple_of=8)
    return model


def write_ramp_png(path):
    """A 24x40 grey ramp, black on the left to white on the right, saved as PNG at ``path``; returns ``path``."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.tile(np.linspace(0, 255, 40).astype(np.uint8)[None, :, None], (24, 1, 3))).save(path)
    return path
