"""Official Depth-Anything-V2 checkpoints -> the transformers ``DepthAnythingForDepthEstimation`` layout.

The official repository (DepthAnything/Depth-Anything-V2) publishes plain state dicts such as
``depth_anything_v2_vits.pth`` or ``depth_anything_v2_metric_hypersim_vitl.pth``. Their keys come in
two groups:

* ``pretrained.*`` -- the DINOv2 ViT: ``cls_token``, ``pos_embed``, ``mask_token``,
  ``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
  ls2.gamma}`` and the final ``norm``;
* ``depth_head.*`` -- the DPT decoder: ``projects.i`` (1x1 convs), ``resize_layers.i`` (transposed
  convs / strided conv, index 2 is an identity), ``scratch.layerK_rn`` (3x3 convs),
  ``scratch.refinenetK.{out_conv, resConfUnit1, resConfUnit2}`` and ``scratch.output_conv1`` /
  ``scratch.output_conv2.{0,2}``.

transformers names the same tensors ``backbone.*``, ``neck.*`` and ``head.*``; its fusion stage runs
from the deepest feature map, so official ``refinenet4`` is fusion layer 0 and ``refinenet1`` is layer 3.
The fused ``qkv`` projection is split into separate query / key / value projections. Two attention
naming schemes exist (transformers 5: ``attention.q_proj`` ... ``attention.o_proj``; transformers 4:
``attention.attention.query`` ... ``attention.output.dense``); :func:`official_to_hf` writes either.

Only torch is needed here (no transformers import), so the converter can run anywhere.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

__all__ = ["DAV2ConversionError", "is_official_dav2", "official_to_hf", "attention_style_of"]

# attention naming per transformers generation: (query, key, value, output projection)
_ATTENTION_NAMES = {
    "q_proj": ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
    "query": ("attention.attention.query", "attention.attention.key", "attention.attention.value",
              "attention.output.dense"),
}


class DAV2ConversionError(KeyError):
    """An official Depth-Anything-V2 state dict holds keys the converter does not know."""

    def __init__(self, unknown: list[str]):
        self.unknown = list(unknown)
        shown = ", ".join(self.unknown[:5]) + (" ..." if len(self.unknown) > 5 else "")
        super().__init__(f"{len(self.unknown)} unknown key(s) in the official Depth-Anything-V2 checkpoint: {shown}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def is_official_dav2(keys: Iterable[str]) -> bool:
    """True if the keys look like the official repository's layout (``pretrained.*`` / ``depth_head.*``)."""
    return any(k.startswith(("pretrained.blocks.", "depth_head.scratch.", "depth_head.projects."))
               for k in keys)


def attention_style_of(keys: Iterable[str]) -> str:
    """``"q_proj"`` (transformers 5) or ``"query"`` (transformers 4), judged from a model's own keys."""
    for k in keys:
        if ".attention.q_proj." in k:
            return "q_proj"
        if ".attention.attention.query." in k:
            return "query"
    return "q_proj"


# Plain renames: (official regex, transformers template). Order does not matter; every pattern is anchored.
_BACKBONE_RULES = [
    (r"pretrained\.cls_token", "backbone.embeddings.cls_token"),
    (r"pretrained\.mask_token", "backbone.embeddings.mask_token"),
    (r"pretrained\.pos_embed", "backbone.embeddings.position_embeddings"),
    (r"pretrained\.patch_embed\.proj\.(weight|bias)", r"backbone.embeddings.patch_embeddings.projection.\1"),
    (r"pretrained\.blocks\.(\d+)\.norm([12])\.(weight|bias)", r"backbone.encoder.layer.\1.norm\2.\3"),
    (r"pretrained\.blocks\.(\d+)\.ls([12])\.gamma", r"backbone.encoder.layer.\1.layer_scale\2.lambda1"),
    (r"pretrained\.blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"backbone.encoder.layer.\1.mlp.\2.\3"),
    (r"pretrained\.norm\.(weight|bias)", r"backbone.layernorm.\1"),
]
_HEAD_RULES = [
    (r"depth_head\.projects\.(\d)\.(weight|bias)", r"neck.reassemble_stage.layers.\1.projection.\2"),
    (r"depth_head\.resize_layers\.([013])\.(weight|bias)", r"neck.reassemble_stage.layers.\1.resize.\2"),
    (r"depth_head\.scratch\.output_conv1\.(weight|bias)", r"head.conv1.\1"),
    (r"depth_head\.scratch\.output_conv2\.0\.(weight|bias)", r"head.conv2.\1"),
    (r"depth_head\.scratch\.output_conv2\.2\.(weight|bias)", r"head.conv3.\1"),
]
_RULES = [(re.compile(p + r"$"), t) for p, t in _BACKBONE_RULES + _HEAD_RULES]
_LAYER_RN = re.compile(r"depth_head\.scratch\.layer([1-4])_rn\.weight$")
_REFINENET = re.compile(
    r"depth_head\.scratch\.refinenet([1-4])\.(out_conv|resConfUnit([12])\.conv([12]))\.(weight|bias)$")
_QKV = re.compile(r"pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_PROJ = re.compile(r"pretrained\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$")


def _rename(key: str, attention: str) -> str | None:
    for pattern, template in _RULES:
        m = pattern.match(key)
        if m:
            return m.expand(template)
    m = _LAYER_RN.match(key)
    if m:  # scratch.layerK_rn -> neck.convs.(K-1)
        return f"neck.convs.{int(m.group(1)) - 1}.weight"
    m = _REFINENET.match(key)
    if m:  # refinenetK feeds on the K-th shallowest map; transformers fuses deepest first
        layer = 4 - int(m.group(1))
        part = "projection" if m.group(2) == "out_conv" else f"residual_layer{m.group(3)}.convolution{m.group(4)}"
        return f"neck.fusion_stage.layers.{layer}.{part}.{m.group(5)}"
    m = _PROJ.match(key)
    if m:
        return f"backbone.encoder.layer.{m.group(1)}.{_ATTENTION_NAMES[attention][3]}.{m.group(2)}"
    return None


def official_to_hf(state: Mapping[str, torch.Tensor], attention: str = "q_proj",
                   strict: bool = True) -> dict[str, torch.Tensor]:
    """Map an official Depth-Anything-V2 state dict onto transformers' key names.

    ``attention`` picks the attention naming of the target transformers version (see
    :func:`attention_style_of`). Unknown keys raise :class:`DAV2ConversionError` (``strict``) or are
    dropped; keys missing from the checkpoint are reported by the strict ``load_state_dict`` that follows.
    Tensors are not copied except the split ``qkv`` projections.
    """
    if attention not in _ATTENTION_NAMES:
        raise ValueError(f"attention must be one of {sorted(_ATTENTION_NAMES)}, got {attention!r}")
    q_name, k_name, v_name, _ = _ATTENTION_NAMES[attention]
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        m = _QKV.match(key)
        if m:
            block, kind = m.groups()
            if value.shape[0] % 3:
                raise ValueError(f"{key}: fused qkv of {value.shape[0]} rows cannot be split in three")
            q, k, v = value.chunk(3, dim=0)
            for name, part in ((q_name, q), (k_name, k), (v_name, v)):
                out[f"backbone.encoder.layer.{block}.{name}.{kind}"] = part.clone()
            continue
        new = _rename(key, attention)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown and strict:
        raise DAV2ConversionError(unknown)
    return out
