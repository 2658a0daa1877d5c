"""Shared contracts: the sample dict, output kinds and target encodings.

Sample (returned by every dataset, consumed by transforms, training and evaluation)::

    {"image": float32 (3,H,W) in [0,1],
     "depth": float32 (1,H,W) in metres (0 where unknown),
     "mask":  bool (1,H,W), True = valid ground truth,
     "meta":  {"name": str, "dataset": str, ...}}

Output kinds (what a model's ``{"depth": ...}`` means once decoded):

* ``metric``    -- depth in metres.
* ``relative``  -- affine-invariant depth (true depth = s * pred + t for unknown s, t).
* ``disparity`` -- affine-invariant inverse depth (larger = nearer): 1/depth = s * pred + t.

Target encodings (how a trained network represents a metric target internally):

* ``depth``      -- metres as is.
* ``inverse``    -- ``max_depth / depth`` (DenseDepth, Leve).
* ``normalized`` -- ``depth / max_depth`` in [0, 1].
"""
from __future__ import annotations

from typing import Any, Literal, TypedDict, get_args

import torch

OutputKind = Literal["metric", "relative", "disparity"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)

TargetEncoding = Literal["depth", "inverse", "normalized"]
TARGET_ENCODINGS: tuple[str, ...] = get_args(TargetEncoding)


class Sample(TypedDict):
    image: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    meta: dict[str, Any]


def encode_target(depth: torch.Tensor, encoding: str, max_depth: float, eps: float = 1e-6) -> torch.Tensor:
    """Metres -> network target. Invalid (<= 0) depths map to 0 in every encoding."""
    valid = depth > 0
    if encoding == "depth":
        out = depth
    elif encoding == "inverse":
        out = max_depth / depth.clamp_min(eps)
    elif encoding == "normalized":
        out = depth / max_depth
    else:
        raise ValueError(f"unknown target encoding {encoding!r}; choose from {TARGET_ENCODINGS}")
    return torch.where(valid, out, torch.zeros_like(out))


def decode_target(pred: torch.Tensor, encoding: str, max_depth: float, eps: float = 1e-6) -> torch.Tensor:
    """Network output -> metres (inverse of :func:`encode_target`)."""
    if encoding == "depth":
        return pred
    if encoding == "inverse":
        return max_depth / pred.clamp_min(eps)
    if encoding == "normalized":
        return pred * max_depth
    raise ValueError(f"unknown target encoding {encoding!r}; choose from {TARGET_ENCODINGS}")
