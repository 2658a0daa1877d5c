"""``evaluate``: score predictions (a folder of files, or a model run on the fly) on a dataset under a protocol.

Per sample (one image at a time; sizes may differ between images):

1. read the sample (``image`` (3,H,W), ``depth`` (1,H,W) metres, ``mask`` (1,H,W));
2. valid pixels = ``mask & crop & min_depth < gt < max_depth`` (:meth:`Protocol.valid_mask`); none
   left -> skipped ("no valid ground-truth pixels ...");
3. prediction: the file ``<predictions>/<meta name>.npy`` (float metres) or ``.png`` (16-bit,
   ``pred_scale`` metres per unit), or the model through :class:`depthlab.predictor.Predictor`
   (``predict_tensor``, the model's declared unit), averaged with the un-flipped prediction of the
   flipped image when ``protocol.flip_average``;
4. resized to ground-truth resolution (``protocol.resize_pred``) when sizes differ;
5. aligned per image (``protocol.alignment`` in ``protocol.alignment_space``), clipped to the depth
   range when ``protocol.clip_pred``; 6. scored with :func:`depthlab.metrics.metric_sums`.

A bad item never stops the run: read errors (corrupt file, size mismatch, missing file -> the
dataset's ``DataError``), crops undefined for the image size, empty valid masks, missing or
unreadable prediction files and non-finite predictions are recorded in ``skipped`` (name -> one
line naming the file) and the evaluation goes on.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthlab.errors import DataError, InputError, MissingFileError, first_line, one_line
from depthlab.evaluation.align import align
from depthlab.evaluation.protocols import CropError, Protocol, get_protocol
from depthlab.io import stays_inside
from depthlab.metrics import METRIC_NAMES, MetricAccumulator, metric_sums, metrics_from_sums
from depthlab.processing import resize_to

PRED_EXTS = (".npy", ".png")


class _Skip(Exception):
    """A per-sample problem: the message is the one-line reason."""


# ----------------------------------------------------------------------------- per-sample pieces
def load_prediction(folder: Path, name: str, pred_scale: float | None = None,
                    png16_scales: dict[str, float] | None = None) -> torch.Tensor:
    """``<folder>/<name>.npy`` (float, metres or the predictions' unit) or ``<name>.png`` / ``<name>_depth16.png``
    (16-bit, times ``pred_scale``) -> float32 ``(H, W)``. Leading singleton dims of an ``.npy`` are dropped
    (``(1,1,H,W)`` works). ``png16_scales`` (name -> metres per unit, from a ``depthlab predict`` sidecar, see
    :func:`read_predict_sidecar`) gives a PNG's scale when ``pred_scale`` is None. Missing file -> ``_Skip``;
    unreadable -> DataError naming the file."""
    folder = Path(folder)
    if not stays_inside(name):  # a sample name must not reach outside the folder
        raise _Skip(f"sample name {name!r} is not a plain relative name; its prediction is not looked up")
    candidates = [folder / f"{name}{ext}" for ext in PRED_EXTS] + [folder / f"{name}_depth16.png"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise _Skip(f"no prediction file {name}.npy, {name}.png or {name}_depth16.png in {folder}")
    if path.suffix == ".png" and pred_scale is None:
        pred_scale = (png16_scales or {}).get(name)
    if pred_scale is not None and not (math.isfinite(pred_scale) and pred_scale > 0):
        raise DataError(path, f"scale {pred_scale} (metres per unit, from pred_scale or predictions.json) must be "
                              "a positive finite number")
    if path.suffix == ".npy":
        from depthlab.io import load_npy

        arr = load_npy(path)  # DataError naming the file: unreadable, empty, not real numbers, too large
        while arr.ndim > 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise DataError(path, f"prediction must be a 2-D numeric array, got shape {arr.shape} dtype {arr.dtype}")
        arr = arr.astype(np.float32)
        if pred_scale is not None:
            arr = arr * np.float32(pred_scale)
        return torch.from_numpy(np.ascontiguousarray(arr))
    from depthlab.io import read_depth

    if pred_scale is None:
        raise DataError(path, "16-bit PNG prediction needs pred_scale (metres per unit, e.g. 0.001 for mm)")
    return torch.from_numpy(read_depth(path, pred_scale))


def read_predict_sidecar(folder: Path) -> tuple[str | None, dict[str, float]]:
    """``(output kind, {name: 16-bit PNG metres per unit})`` from the ``predictions.json`` that
    ``depthlab predict`` writes beside its outputs; ``(None, {})`` without one. Scales only for metric maps
    (relative/disparity PNGs are min-max encoded per image and cannot be scored as depth). Read once per
    evaluation."""
    try:
        side = json.loads((Path(folder) / "predictions.json").read_text())
    except (OSError, ValueError):
        return None, {}
    if not isinstance(side, dict):
        return None, {}
    scales = {}
    for name, entry in (side.get("files") or {}).items() if isinstance(side.get("files"), dict) else []:
        if isinstance(entry, dict) and entry.get("kind") == "metric" and entry.get("png16_scale") is not None:
            # a non-number (a list, a string) becomes NaN, 1e400 parses as inf: load_prediction refuses both
            # (that file is skipped, with why)
            v = entry["png16_scale"]
            scales[str(name)] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
    kind = side.get("output_kind")
    return (kind if kind in ("metric", "relative", "disparity") else None), scales


def apply_protocol(pred: torch.Tensor, gt: torch.Tensor, protocol: Protocol, mask: torch.Tensor | None = None,
                   pred_kind: str = "metric") -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and ground truth -> ``(final depth (B,1,H,W) metres, valid bool (B,1,H,W))``.

    ``pred`` ``(B,1,h,w)`` in the unit ``pred_kind`` says (``metric`` metres, ``relative`` depth up to
    scale and shift, ``disparity`` inverse depth up to scale and shift); ``gt`` ``(B,1,H,W)`` metres;
    ``mask`` bool like ``gt`` (True = measured). Resizes, aligns and clips as the protocol says; the
    caller scores ``metric_sums(final, gt, valid)``. Raises CropError for an undefined crop.
    """
    valid = protocol.valid_mask(gt, mask)
    pred = resize_to(pred, gt.shape[-2:], protocol.resize_pred)
    check_kind(pred_kind, protocol)
    final = align(pred, gt, valid, method=protocol.alignment, space=protocol.alignment_space,
                  pred_kind=pred_kind, min_depth=protocol.min_depth, max_depth=protocol.max_depth)
    return protocol.clip(final), valid


def check_kind(pred_kind: str, protocol: Protocol) -> None:
    """ValueError if an affine-invariant prediction would be scored without alignment."""
    if pred_kind in ("relative", "disparity") and protocol.alignment == "none":
        raise InputError(
            f"predictions are {pred_kind} (affine-invariant), but protocol {protocol.name!r} has alignment=none, "
            "which would score meaningless numbers; use a protocol with alignment (e.g. 'depth_anything' for "
            "disparity, 'marigold' for relative depth, or '<preset>:alignment=lstsq,alignment_space=disparity')")


# ----------------------------------------------------------------------------- evaluate
def evaluate(dataset, root=None, split: str = "test", model=None, checkpoint_path=None, checkpoint=None,
             predictions=None, pred_scale: float | None = None, protocol: str | Protocol = "none", out=None,
             device: str = "cpu", limit: int | None = None, progress: bool = False,
             pred_kind: str | None = None, input_size="auto", dataset_kwargs: dict | None = None,
             backend: str | None = None) -> dict[str, Any]:
    """Evaluate a model or a folder of predictions on a dataset under a protocol.

    Args:
        dataset: registered dataset name (``depthlab.data.create_dataset(name, root=root, split=split)``,
            e.g. ``"folder"`` for ``rgb/ + depth/ + index.csv``) or a Dataset object returning Samples.
        root, split: passed to ``create_dataset``; ``dataset_kwargs``: its other options (e.g. KITTI's
            ``gt_root``, ``require_gt``).
        model: registered model name or ``nn.Module`` (with ``depth_info``); ``checkpoint_path`` = its
            weights file. ``checkpoint``: a depthlab checkpoint (rebuilds its own model).
        predictions: folder of ``<meta name>.npy`` (float32 metres) or ``.png`` (16-bit) files.
        pred_scale: metres per unit of PNG predictions (also multiplies ``.npy`` values if given).
        protocol: preset name, ``"preset:key=value,..."`` spec or a :class:`Protocol`.
        out: write the result JSON here (atomic).
        device: where the model runs. limit: first N samples only. progress: rich progress bar.
        pred_kind: what files in ``predictions`` hold: ``metric``, ``relative`` or ``disparity``; default:
            what the folder's ``predictions.json`` (written by ``depthlab predict``) says, else ``metric``.
        input_size: the network input size for a model source, as :class:`~depthlab.predictor.Predictor`
            takes it: ``"auto"`` (default) = the trained size when the weights declare one, else the image's;
            ``None`` = the image's own size (padded to ``multiple_of``), ``"model"`` = the size the
            weights were trained at (FastDepth: 224x224), an int (short side) or ``(H, W)``. The prediction
            is resized back to the ground truth either way.
        backend: what runs a model source's network, as :class:`~depthlab.predictor.Predictor` takes it (default
            ``auto``: ONNX Runtime when it verifies, else eager PyTorch); ``model["backend"]`` records the one used.

    Returns:
        ``{"summary": {metric: float, "n_images", "n_pixels"}, "protocol": {...}, "protocol_description",
        "per_image": {name: {metric: float, "n_pixels", "category"?}}, "per_category": {category: summary}
        (samples whose ``meta`` has a ``category``, averaged like the summary), "skipped": {name: reason}, "dataset": {...},
        "model": {...} | None, "predictions": {...} | None, "warnings": [...], "created", "depthlab_version"}``.
        Metrics are NaN-free: a value that cannot be computed (no image evaluated) is ``None``.
    """
    if out is not None:  # before the evaluation, not after it
        from depthlab.io import check_output_file

        check_output_file(out)
    proto = get_protocol(protocol)
    _check_arguments(limit, model, checkpoint, predictions, checkpoint_path)
    warn_list: list[str] = []
    predictor = model_info = pred_info = None
    if predictions is not None:
        pred_info = _predictions_source(predictions, pred_scale, pred_kind, proto, warn_list)
        kind = pred_info["kind"]
    else:
        predictor, model_info = _build_predictor(model, checkpoint_path, checkpoint, device, input_size, backend)
        kind = predictor.kind
    check_kind(kind, proto)
    ds, ds_name = _open_dataset(dataset, root, split, dataset_kwargs)
    n = len(ds) if limit is None else min(len(ds), limit)

    def sums_of(sample, where: str, name: str) -> dict[str, torch.Tensor]:
        return _score_sample(sample, proto, kind, predictor, pred_info, pred_scale, where, name)

    scores = _Scores(proto.averaging)
    for i in _progress(range(n), f"{ds_name} / {proto.name}", progress):
        scores.score(ds, i, sums_of)
    summary = _summary(scores.acc)
    if summary["n_images"] == 0:
        msg = f"no image could be evaluated ({len(scores.skipped)} skipped)"
        warn_list.append(msg)
        warnings.warn(msg, stacklevel=2)
    if predictor is not None:
        model_info["backend"] = predictor.backend_used
    result = _result(proto, summary, scores, ds, ds_name, root, split, n, model_info, pred_info, warn_list)
    if out is not None:
        from depthlab.io import write_json

        write_json(out, result)
    return result


def _check_arguments(limit, model, checkpoint, predictions, checkpoint_path) -> None:
    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    n_sources = sum(x is not None for x in (model, checkpoint, predictions))
    if n_sources != 1:
        raise InputError("give exactly one source of predictions: predictions=<folder>, model=<name> "
                         "(optionally with checkpoint_path) or checkpoint=<depthlab checkpoint>"
                         + (f" (got {n_sources})" if n_sources else ""))
    if checkpoint_path is not None and model is None:
        raise InputError("checkpoint_path needs model=<name>; for a depthlab checkpoint use checkpoint=")


def _predictions_source(predictions, pred_scale, pred_kind, proto: Protocol, warn_list: list[str]) -> dict:
    """``{"dir", "kind", "pred_scale", "_png16_scales"}`` of a predictions folder, checked once."""
    if pred_scale is not None and not (math.isfinite(pred_scale) and pred_scale > 0):
        raise InputError(f"pred_scale must be a positive finite number (metres per unit), got {pred_scale}")
    pred_dir = Path(predictions)
    if not pred_dir.is_dir():
        raise MissingFileError(f"{pred_dir}: predictions folder not found")
    # a `depthlab predict` folder says what it holds (kind, 16-bit PNG scales): read once
    side_kind, png16_scales = read_predict_sidecar(pred_dir)
    # only PNGs (no .npy to prefer) and no scale from anywhere: say so once instead of once per image
    if (pred_scale is None and not png16_scales and next(pred_dir.rglob("*.png"), None) is not None
            and next(pred_dir.rglob("*.npy"), None) is None):
        raise InputError(f"{pred_dir} holds PNG predictions: give pred_scale (metres per unit, e.g. 0.001 for mm)")
    if pred_kind is None:
        pred_kind = side_kind or "metric"
    elif side_kind and side_kind != pred_kind:
        raise InputError(f"{pred_dir}/predictions.json says the predictions are {side_kind}, but pred_kind "
                         f"is {pred_kind!r}; drop pred_kind (--pred-kind) or fix it")
    if pred_kind not in ("metric", "relative", "disparity"):
        raise InputError(f"pred_kind must be metric, relative or disparity, got {pred_kind!r}")
    if proto.flip_average:
        msg = (f"protocol {proto.name!r} asks for flip averaging, which cannot be applied to prediction files; "
               "scoring the files as they are")
        warn_list.append(msg)
        warnings.warn(msg, stacklevel=3)
    return {"dir": str(pred_dir), "kind": pred_kind,
            "pred_scale": pred_scale if pred_scale is not None or not png16_scales else "per file from predictions.json",
            "_png16_scales": png16_scales}


def _open_dataset(dataset, root, split: str, dataset_kwargs: dict | None):
    """``(dataset object, its name)`` from a registered name or a dataset object."""
    if isinstance(dataset, (str, os.PathLike)):
        from depthlab.data import create_dataset

        return create_dataset(str(dataset), root=root, split=split, **(dataset_kwargs or {})), str(dataset)
    if dataset_kwargs:
        raise InputError("dataset_kwargs apply to a registered dataset name, not to a dataset object")
    return dataset, getattr(dataset, "dataset_name", None) or type(dataset).__name__


def _progress(items, label: str, show: bool):
    """``items``, advancing a rich progress bar on stderr when ``show``."""
    if not show:
        yield from items
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]eval[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(escape(label), total=len(items))
        for item in items:
            yield item
            bar.advance(task)


class _Scores:
    """What the evaluation has gathered: the accumulator, one per ``meta["category"]`` (same averaging),
    the per-image metrics and the skipped items with their reasons."""

    def __init__(self, averaging: str):
        self.averaging = averaging
        self.acc = MetricAccumulator(mode=averaging)
        self.by_category: dict[str, MetricAccumulator] = {}
        self.per_image: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}

    def score(self, ds, i: int, sums_of) -> None:
        """Read item ``i`` and add ``sums_of(sample, where, name)``; a per-item problem is recorded as skipped."""
        try:
            sample = ds[i]
        except Exception as e:  # DataError from the reader, or any other reading failure
            self.skipped[_unique(_name_of_failed(ds, i, e), i, self.per_image, self.skipped)] = _reason(e)
            return
        meta = sample.get("meta", {}) or {}
        name = _unique(str(meta.get("name", f"#{i}")), i, self.per_image, self.skipped)
        where = meta.get("depth_path") or name
        try:
            sums = sums_of(sample, where, name)
        except _Skip as e:
            self.skipped[name] = str(e)
            return
        except CropError as e:
            self.skipped[name] = f"{where}: {e}"
            return
        except DataError as e:
            self.skipped[name] = _reason(e)
            return
        self.add(name, sums, meta.get("category"))

    def add(self, name: str, sums: dict[str, torch.Tensor], category=None) -> None:
        """Per-image sums of one item (one row per scored run: 2 with flip runs)."""
        sums = {k: v.reshape(-1) for k, v in sums.items()}
        self.acc.update(sums=sums)
        per = metrics_from_sums(sums)
        self.per_image[name] = {k: _num(per[k].mean()) for k in METRIC_NAMES}
        self.per_image[name]["n_pixels"] = int(sums["n"][0])
        if category is not None:
            self.per_image[name]["category"] = str(category)
            self.by_category.setdefault(str(category), MetricAccumulator(mode=self.averaging)).update(sums=sums)


def _result(proto: Protocol, summary, scores: _Scores, ds, ds_name, root, split, n, model_info, pred_info,
            warn_list) -> dict[str, Any]:
    from depthlab import __version__

    return {
        "summary": summary,
        "protocol": proto.to_dict(),
        "protocol_description": proto.describe(),
        "dataset": {"name": ds_name, "root": str(root) if root is not None else _root_of(ds),
                    "split": getattr(ds, "split", split), "n_samples": len(ds), "n_considered": n},
        "model": model_info,
        "predictions": {k: v for k, v in pred_info.items() if not k.startswith("_")} if pred_info else None,
        "per_image": scores.per_image,
        "per_category": {c: _summary(a) for c, a in sorted(scores.by_category.items())},
        "skipped": scores.skipped,
        "warnings": warn_list,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "depthlab_version": __version__,
    }


def _summary(acc: MetricAccumulator) -> dict[str, Any]:
    if not acc.update_called:  # nothing scored: no metric (and no torchmetrics warning about it)
        return {**dict.fromkeys(METRIC_NAMES), "n_images": 0, "n_pixels": 0}
    total = acc.compute()
    summary: dict[str, Any] = {k: _num(total[k]) for k in METRIC_NAMES}
    summary["n_images"] = int(total["n_images"])
    summary["n_pixels"] = int(total["n_pixels"])
    return summary


def _score_sample(sample, proto: Protocol, kind: str, predictor, pred_info, pred_scale, where, name):
    gt = _as_tensor(sample["depth"]).float()
    if gt.ndim == 2:
        gt = gt[None]
    gt = gt[None]  # (1,1,H,W)
    mask = sample.get("mask")
    mask = _as_tensor(mask).bool().reshape(gt.shape) if mask is not None else None
    image = sample.get("image")
    if image is not None:
        image = _as_tensor(image)
        if tuple(image.shape[-2:]) != tuple(gt.shape[-2:]):
            raise _Skip(f"{where}: depth size {gt.shape[-1]}x{gt.shape[-2]} (WxH) differs from image size "
                        f"{image.shape[-1]}x{image.shape[-2]}")
    valid = proto.valid_mask(gt, mask)
    if not bool(valid.any()):
        raise _Skip(f"{where}: no valid ground-truth pixels after crop and depth caps "
                    f"(crop={proto.crop}, {proto.min_depth:g} < gt < {'inf' if proto.max_depth is None else f'{proto.max_depth:g}'} m)")

    if predictor is None:
        pred = load_prediction(Path(pred_info["dir"]), name, pred_scale, pred_info["_png16_scales"])[None, None]
        source = f"{Path(pred_info['dir']) / name}.npy/.png/_depth16.png"
    else:
        if image is None:
            raise _Skip(f"{where}: sample has no image to run the model on")
        pred = _predict(predictor, image.float()[None], proto)
        source = f"model output for {name}"
    bad = (~torch.isfinite(pred)).sum()
    if bool(bad > 0):
        raise _Skip(f"{source}: prediction has {int(bad)} non-finite values")
    runs = [apply_protocol(p[None], gt, proto, mask=mask, pred_kind=kind)[0] for p in pred]
    return metric_sums(torch.cat(runs), gt.expand(len(runs), -1, -1, -1), valid.expand(len(runs), -1, -1, -1))


def _predict(predictor, images: torch.Tensor, proto: Protocol) -> torch.Tensor:
    """Model predictions ``(R,1,h,w)`` for one image ``(1,3,H,W)``, each run to be scored as a sample: R = 1,
    or R = 2 with ``flip_average`` and ``flip_combine="metrics"`` (the un-flipped prediction of the flipped image
    is the second); ``flip_combine="prediction"`` averages the two into one."""
    pred = predictor.predict_tensor(images).float().cpu()
    if proto.flip_average:
        dim = -1 if proto.flip_axis == "horizontal" else -2
        back = torch.flip(predictor.predict_tensor(torch.flip(images, dims=[dim])).float().cpu(), dims=[dim])
        pred = torch.cat([pred, back]) if proto.flip_combine == "metrics" else 0.5 * (pred + back)
    return pred


def _build_predictor(model, checkpoint_path, checkpoint, device, input_size="auto", backend=None):
    from depthlab.models.registry import resolve_model
    from depthlab.predictor import Predictor

    module = resolve_model(model, checkpoint_path=checkpoint_path, checkpoint=checkpoint)
    predictor = Predictor(module, device=device, input_size=input_size, backend=backend)
    info = {"name": getattr(module, "model_name", None) or (model if isinstance(model, str) else type(module).__name__)}
    if checkpoint is None and isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        checkpoint = model  # a depthlab checkpoint given as the model: say which file was evaluated
    if checkpoint is not None:
        info["checkpoint"] = str(checkpoint)
    else:
        info["checkpoint_path"] = str(checkpoint_path) if checkpoint_path is not None else None
    info["input_size"] = list(predictor.input_size) if isinstance(predictor.input_size, tuple) else predictor.input_size
    info.update({"output_kind": predictor.kind, "device": str(device)})
    return predictor, info


# ----------------------------------------------------------------------------- small helpers
def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _num(x) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None



def _reason(e: BaseException) -> str:
    if isinstance(e, DataError):
        return first_line(e)
    return one_line(e)


def _name_of_failed(ds, i: int, e: BaseException) -> str:
    names = getattr(ds, "names", None)
    try:
        if names is not None:
            return str(names[i])
    except Exception:
        pass
    if isinstance(e, DataError) and e.path:
        return Path(e.path).stem
    return f"#{i}"


def _unique(name: str, i: int, *taken: dict) -> str:
    if any(name in t for t in taken):
        return f"{name}#{i}"
    return name


def _root_of(ds) -> str | None:
    r = getattr(ds, "root", None)
    return str(r) if r is not None else None


# ----------------------------------------------------------------------------- markdown
def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


_FMT = {"n_images": "{:d}", "n_pixels": "{:d}"}


def format_markdown(result: dict[str, Any]) -> str:
    """The summary as a Markdown table, with the protocol's name and full settings printed above it.

    Every row of the table also names the protocol, so a copied table keeps it.
    """
    proto = result.get("protocol", {}) or {}
    name = proto.get("name", "?")
    desc = result.get("protocol_description")
    if desc is None and proto:
        desc = Protocol(**proto).describe()
    ds = result.get("dataset", {}) or {}
    src = result.get("model") or {}
    if src:
        what = f"model `{src.get('name')}` ({src.get('output_kind', '?')})"
    else:
        p = result.get("predictions") or {}
        what = f"predictions `{p.get('dir')}` ({p.get('kind', 'metric')})"
    summary = result.get("summary", {}) or {}
    skipped = result.get("skipped", {}) or {}
    lines = [
        f"**Protocol `{name}`**: {desc}",
        "",
        f"Dataset `{ds.get('name')}` (split `{ds.get('split')}`), {what}; "
        f"{_plural(summary.get('n_images', 0), 'image')} evaluated, {len(skipped)} skipped.",
        "",
    ]
    per_category = result.get("per_category") or {}
    cols = ["protocol"] + (["category"] if per_category else []) + ["n_images", "n_pixels"]
    cols += [k for k in METRIC_NAMES if k in summary]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join(["---"] * (2 if per_category else 1) + ["---:"] * (len(cols) - 1 - bool(per_category))) + "|")
    rows = [("all", summary)] + list(per_category.items())
    for category, values in rows if per_category else rows[:1]:
        cells = [name] + ([category] if per_category else [])
        for k in cols[len(cells):]:
            v = values.get(k)
            if v is None:
                cells.append("n/a")
            elif k in _FMT:
                cells.append(_FMT[k].format(int(v)))
            else:
                cells.append(f"{v:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["evaluate", "format_markdown", "apply_protocol", "load_prediction", "resize_to", "check_kind"]
