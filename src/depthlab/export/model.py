"""``depthlab export``: build a model from a registered name or a checkpoint and export it to a verified ONNX file.

The export and the ONNX Runtime check are :func:`depthlab.export.onnx.export_onnx`; this module only resolves
the model and the input size and writes a JSON sidecar (``<out>.json``) with what a consumer of the ``.onnx``
needs: input normalisation (mean/std), output kind and unit, ``multiple_of``, the verification numbers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from depthlab.errors import InputError
from depthlab.models.registry import resolve_model


def export_model(out: str | os.PathLike, model: str | None = None, checkpoint_path=None, checkpoint=None,
                 height: int | None = None, width: int | None = None, dynamic: bool = False, opset: int = 17,
                 batch_size: int = 1, pretrained: bool = True, tolerance: float | None = None,
                 precision: str = "fp32", calibration=None) -> dict[str, Any]:
    """Export a model to ONNX at ``out``, verified against PyTorch in ONNX Runtime; returns the report dict.

    The input size defaults to the weights' ``input_size``, else (a checkpoint written by ``depthlab train``)
    the run's training size ``data.size``; ``height``/``width`` must be multiples of the
    model's ``multiple_of``. The graph takes ``x`` (B,3,H,W) already normalised with the ``mean``/``std`` in the
    sidecar and returns ``depth`` (B,1,H,W) raw (``target_encoding``; see docs/outputs.md). ``dynamic`` makes
    batch, height and width dynamic (and verifies a second shape). ``precision`` (fp32, fp16, int8-dynamic,
    int8-static) and ``calibration`` (image folder or files, default the bundled NYU frames) are
    :func:`~depthlab.export.onnx.export_onnx`'s; ``tolerance`` defaults to the precision's. Writes
    ``<out>.json`` next to the file.
    """
    from depthlab.export.onnx import export_onnx
    from depthlab.io import write_json

    net = resolve_model(model, checkpoint_path, checkpoint, pretrained).eval()
    info = net.depth_info
    name = getattr(net, "model_name", None) or model
    if height is None or width is None:
        default_h, default_w = _default_size(net, name)
        height, width = height or default_h, width or default_w
    m = int(info.multiple_of or 1)
    for label, v in (("height", height), ("width", width)):
        if v < 1 or v % m:
            raise InputError(f"{label} {v} must be a positive multiple of {m} ({name}'s multiple_of)")
    report = export_onnx(net, out, (batch_size, 3, int(height), int(width)), dynamic=dynamic, opset=opset,
                         tolerance=tolerance, precision=precision, calibration=calibration).to_dict()
    report.update(model_name=name, checkpoint=str(checkpoint) if checkpoint else None,
                  checkpoint_path=str(checkpoint_path) if checkpoint_path else None,
                  input_name="x", output_name="depth", mean=list(info.mean), std=list(info.std),
                  output_kind=info.output_kind, target_encoding=info.target_encoding, max_depth=info.max_depth,
                  multiple_of=m)
    write_json(Path(str(out) + ".json"), report)
    return report


def _default_size(net, name: str) -> tuple[int, int]:
    """The weights' declared ``input_size``, else the training size of the run that wrote the checkpoint."""
    if net.depth_info.input_size is not None:
        return int(net.depth_info.input_size[0]), int(net.depth_info.input_size[1])
    config = (getattr(net, "checkpoint_meta", None) or {}).get("config") or {}
    size = (config.get("data") or {}).get("size")
    if size:
        return int(size[0]), int(size[1])
    raise InputError(f"{name} declares no input_size and its checkpoint records no training size (data.size): "
                     "pass --height and --width")


__all__ = ["export_model", "resolve_model"]
