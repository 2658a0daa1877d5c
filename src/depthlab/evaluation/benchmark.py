"""Zero-shot benchmark: every model on every dataset, each under its paper's protocol.

:func:`run_benchmark` calls :func:`depthlab.evaluation.evaluate` once per (model, dataset) pair with the
protocol that the model's output kind and the dataset call for (:func:`protocol_for`):

===================  ==========================================  ==============================================
output kind          protocol                                    on a dataset with a metric preset (e.g. NYU)
===================  ==========================================  ==============================================
``metric`` (metres)  the dataset's metric preset, no alignment    ``nyu_eigen``: Eigen crop, 1e-3 < gt < 10 m
``disparity``        ``depth_anything``: least-squares scale +   ``depth_anything:crop=nyu_eigen,max_depth=10``
                     shift on 1/gt, then inverted
``relative``         ``marigold``: least-squares scale + shift   ``marigold:crop=nyu_eigen,max_depth=10``
                     on depth
===================  ==========================================  ==============================================

The dataset's metric preset comes from :data:`DATASET_PRESETS` (``nyu*`` -> ``nyu_eigen``, ``kitti`` ->
``kitti_garg``, ``diode``, ``endoslam``; anything else -> ``none``). A ``folder`` dataset takes the preset of
the family its root is named after (``.../nyu`` -> ``nyu_eigen``, ``.../kitti`` -> ``kitti_garg``), or
``dataset_presets={"folder": "..."}``. Affine-invariant models keep the crop and depth caps of that preset,
so their numbers cover the same pixels as the metric models'.

Outputs in ``out_dir``: ``results.json`` (everything, including each evaluation's per-image numbers),
``results.csv`` (one row per model x dataset), ``results.md`` (a table per dataset with the protocol
printed under it) and ``figure_<dataset>.png`` (rows = images; columns = RGB | ground truth | each model,
one colour scale in metres per row; affine-invariant predictions are shown after the protocol's alignment).

A model whose weights are unavailable (:class:`~depthlab.errors.WeightsUnavailableError`) or that cannot be
built is reported under ``skipped_models`` and left out; a (model, dataset) evaluation that fails is
reported in its row (``status``) and the benchmark goes on.
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from depthlab.errors import InputError, WeightsUnavailableError, first_line, one_line
from depthlab.evaluation.protocols import Protocol, get_protocol
from depthlab.metrics import METRIC_NAMES
from depthlab.evaluation.speed import ForwardTimer, count_params
from depthlab.report.figures import save_comparison_figure

DATASET_PRESETS: dict[str, str] = {
    "nyu": "nyu_eigen", "nyu_mat": "nyu_eigen", "nyu_reduced": "nyu_eigen",
    "kitti": "kitti_garg", "diode": "diode", "endoslam": "endoslam",
}
# registered dataset -> the family id that WeightsInfo.train_datasets uses
DATASET_FAMILIES: dict[str, str] = {"nyu": "nyu", "nyu_mat": "nyu", "nyu_reduced": "nyu", "kitti": "kitti",
                                    "diode": "diode", "endoslam": "endoslam"}
AFFINE_PRESETS: dict[str, str] = {"disparity": "depth_anything", "relative": "marigold"}
_FOLDER_FAMILIES = ("nyu", "kitti", "diode")  # a folder named after one of these holds that family's images
CSV_COLUMNS = ["model", "dataset", "status", "output_kind", "protocol", "in_domain", *METRIC_NAMES, "n_images",
               "n_skipped", "resolution", "params", "latency_ms", "error"]


# --------------------------------------------------------------------------------------------------
# Protocols


def dataset_family(dataset: str, root=None) -> str | None:
    """The family of a dataset (``nyu``, ``kitti``, ``diode``, ``endoslam``): its registered name, or for a
    ``folder`` dataset the family its root (last two path parts) is named after; None if unknown."""
    if dataset in DATASET_FAMILIES:
        return DATASET_FAMILIES[dataset]
    if dataset == "folder" and root is not None:
        parts = [p.lower() for p in Path(root).parts]
        for family in _FOLDER_FAMILIES:
            if any(family in p for p in parts[-2:]):
                return family
    return None


def dataset_preset(dataset: str, root=None, overrides: Mapping[str, str] | None = None) -> str:
    """The metric protocol preset of a dataset (see the module docstring)."""
    if overrides and dataset in overrides:
        return str(overrides[dataset])
    if dataset in DATASET_PRESETS:
        return DATASET_PRESETS[dataset]
    family = dataset_family(dataset, root)
    return DATASET_PRESETS.get(family, "none") if family else "none"


def in_domain(model: nn.Module, dataset: str, root=None) -> bool:
    """Whether ``model``'s weights were trained on images of ``dataset``'s family
    (``model.depth_info.train_datasets``): such a score is in-domain, not zero-shot."""
    family = dataset_family(dataset, root)
    info = getattr(model, "depth_info", None)
    return bool(family and info is not None and family in info.train_datasets)


def protocol_for(kind: str, dataset: str, root=None, overrides: Mapping[str, str] | None = None) -> Protocol:
    """The protocol a model of output ``kind`` is scored with on ``dataset``."""
    base = get_protocol(dataset_preset(dataset, root, overrides))
    if kind == "metric":
        return base
    if kind not in AFFINE_PRESETS:
        raise ValueError(f"unknown output kind {kind!r}; expected metric, disparity or relative")
    return get_protocol(AFFINE_PRESETS[kind], **_caps(base))


def protocol_table() -> list[dict[str, str]]:
    """The mapping as rows (dataset preset x output kind -> protocol name), for docs and results."""
    rows = []
    for preset in sorted({"none", *DATASET_PRESETS.values()}):
        ds = next((d for d, p in DATASET_PRESETS.items() if p == preset), "synthetic / other")
        rows.append({"dataset": ds, "metric": preset,
                     "disparity": get_protocol(AFFINE_PRESETS["disparity"], **_caps(preset)).name,
                     "relative": get_protocol(AFFINE_PRESETS["relative"], **_caps(preset)).name})
    return rows


def _caps(preset) -> dict[str, Any]:
    """The crop and depth cap of a dataset preset (name or Protocol): what an affine preset keeps."""
    p = get_protocol(preset) if isinstance(preset, str) else preset
    out: dict[str, Any] = {}
    if p.crop != "none":
        out["crop"] = p.crop
    if p.max_depth is not None:
        out["max_depth"] = p.max_depth
    return out


# --------------------------------------------------------------------------------------------------
# Model specs


@dataclass
class ModelSpec:
    """One model of the benchmark: ``create_model(name, pretrained, checkpoint_path, **kwargs)``, shown as ``label``."""

    name: str
    checkpoint_path: str | None = None
    pretrained: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    module: nn.Module | None = None  # an already built model (then name/kwargs are only descriptive)
    input_size: Any = "auto"  # as the Predictor takes it: "auto" = the declared training size if any; None = native

    @property
    def display(self) -> str:
        return self.label or self.name


def parse_model_spec(spec) -> ModelSpec:
    """``"name"`` (pretrained weights), ``"name:path/to/weights"``, a dict of :class:`ModelSpec` fields,
    a :class:`ModelSpec` or an ``nn.Module`` built by :func:`depthlab.create_model`."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, nn.Module):
        name = getattr(spec, "model_name", None) or type(spec).__name__
        return ModelSpec(name=name, pretrained=False, module=spec)
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"name", "checkpoint_path", "pretrained", "kwargs", "label", "input_size"}
        if unknown or "name" not in spec:
            raise InputError(f"model spec {dict(spec)!r}: needs 'name'; allowed keys name, checkpoint_path, "
                             f"pretrained, kwargs, label, input_size"
                             + (f" (unknown: {sorted(unknown)})" if unknown else ""))
        return ModelSpec(name=str(spec["name"]), checkpoint_path=spec.get("checkpoint_path"),
                         pretrained=bool(spec.get("pretrained", True)), kwargs=dict(spec.get("kwargs") or {}),
                         label=spec.get("label"), input_size=spec.get("input_size", "auto"))
    if isinstance(spec, str):
        name, sep, path = spec.strip().partition(":")
        if not name:
            raise InputError(f"model spec {spec!r}: empty model name")
        return ModelSpec(name=name, checkpoint_path=path if sep and path else None,
                         label=spec.strip() if sep and path else None)
    raise TypeError(f"model spec must be a name, 'name:checkpoint', a dict or an nn.Module, got {type(spec).__name__}")


def build_model(spec: ModelSpec) -> nn.Module:
    """Build (and load) the spec's model; raises WeightsUnavailableError when its weights cannot be had."""
    if spec.module is not None:
        return spec.module
    from depthlab.models.registry import create_model

    return create_model(spec.name, pretrained=spec.pretrained and spec.checkpoint_path is None,
                        checkpoint_path=spec.checkpoint_path, **spec.kwargs)


# --------------------------------------------------------------------------------------------------
# The benchmark


def run_benchmark(models: Sequence, datasets: Sequence[str], out_dir, roots: Mapping[str, Any] | None = None,
                  limit: int | None = None, device: str = "cpu", split: str = "test",
                  dataset_presets: Mapping[str, str] | None = None, figure_rows: int = 3,
                  progress: bool = False) -> dict[str, Any]:
    """Evaluate every model on every dataset under its paper protocol; write results.{json,csv,md} + figures.

    Args:
        models: model specs (see :func:`parse_model_spec`): ``"name"``, ``"name:checkpoint"``, dicts, modules.
        datasets: registered dataset names (``folder`` needs a root); ``roots``: dataset name -> root.
        out_dir: output folder (created). limit: first N samples per dataset. device: where models run.
        dataset_presets: dataset name -> metric protocol preset, overriding :func:`dataset_preset`.
        figure_rows: images per figure (0 = no figures).

    Returns the results dict also written to ``results.json``.
    """
    from depthlab import __version__

    specs, roots = _check_inputs(models, datasets, roots)
    labels = [s.display for s in specs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built, skipped_models = _build_models(specs)

    rows: list[dict[str, Any]] = []
    evaluations: dict[str, dict[str, Any]] = {}
    figures: dict[str, Any] = {}
    for ds in datasets:
        root = roots.get(ds)
        for s in specs:
            if s.display not in built:
                continue
            row, res = _score(s, built[s.display], ds, root, split, device, limit, dataset_presets, progress)
            rows.append(row)
            if res is not None:
                evaluations.setdefault(s.display, {})[ds] = res
        if figure_rows > 0:
            n_fig = figure_rows if limit is None else max(1, min(figure_rows, limit))
            try:
                figures[ds] = save_comparison_figure(
                    {lbl: built[lbl] for lbl in labels if lbl in built and _ok(rows, lbl, ds)}, ds, root, split,
                    out_dir / f"figure_{_safe(ds)}.png", n_rows=n_fig, device=device,
                    dataset_presets=dataset_presets, input_sizes={sp.display: sp.input_size for sp in specs})
            except Exception as e:  # a figure problem must not lose the numbers
                figures[ds] = {"error": one_line(e)}

    result = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "depthlab_version": __version__,
        "settings": {"models": labels, "datasets": list(datasets), "roots": roots, "split": split, "limit": limit,
                     "device": device, "dataset_presets": dict(dataset_presets or {})},
        "machine": _machine(),
        "protocol_mapping": protocol_table(),
        "rows": rows,
        "train_datasets": {lbl: list(m.depth_info.train_datasets) for lbl, m in built.items()
                           if getattr(m, "depth_info", None) is not None},
        "skipped_models": skipped_models,
        "figures": figures,
        "evaluations": evaluations,
    }
    _write_results(out_dir, result)
    return result


def _check_inputs(models: Sequence, datasets: Sequence[str],
                  roots: Mapping[str, Any] | None) -> tuple[list[ModelSpec], dict[str, str | None]]:
    """(model specs, dataset -> root as str): fails on typos and duplicate labels before any work."""
    from depthlab.models.registry import get_entry

    specs = [parse_model_spec(m) for m in models]
    if not specs or not datasets:
        raise InputError("run_benchmark needs at least one model and one dataset")
    labels = [s.display for s in specs]
    if len(set(labels)) != len(labels):
        raise InputError(f"model labels must be unique, got {labels}")
    for s in specs:  # typos fail before any work (unknown names list close matches)
        if s.module is None:
            get_entry(s.name)
    roots = {k: (str(v) if v is not None else None) for k, v in dict(roots or {}).items()}
    unknown_roots = set(roots) - set(datasets)
    if unknown_roots:
        raise InputError(f"roots given for datasets not in the benchmark: {sorted(unknown_roots)}")
    return specs, roots


def _build_models(specs: Sequence[ModelSpec]) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """(label -> model in eval mode, label -> why it was skipped)."""
    built: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    for s in specs:
        try:
            built[s.display] = build_model(s).eval()
        except WeightsUnavailableError as e:
            skipped[s.display] = f"weights unavailable: {first_line(e)}"
        except Exception as e:  # a model that cannot be built must not stop the others
            skipped[s.display] = f"cannot build model ({one_line(e)})"
    return built, skipped


def _score(spec: ModelSpec, model: nn.Module, ds: str, root, split: str, device: str, limit: int | None,
           dataset_presets: Mapping[str, str] | None, progress: bool) -> tuple[dict[str, Any], dict | None]:
    """(results row, evaluate()'s result or None when it failed) of one model on one dataset."""
    from depthlab.evaluation.runner import evaluate

    kind = model.depth_info.output_kind
    row: dict[str, Any] = {"model": spec.display, "dataset": ds, "output_kind": kind, "params": count_params(model),
                           "in_domain": in_domain(model, ds, root)}
    timer = ForwardTimer(model)
    try:
        proto = protocol_for(kind, ds, root, dataset_presets)
        row["protocol"] = proto.name
        # eager: latency_ms times the module's forward (hooks), and foundation models would export per image shape
        res = evaluate(ds, root=root, split=split, model=model, protocol=proto, device=device, limit=limit,
                       progress=progress, input_size=spec.input_size, backend="eager")
    except Exception as e:  # the evaluation of this pair failed: report it, go on
        row.update(status="failed", error=one_line(e))
        return row, None
    finally:
        timer.close()
    summ = res["summary"]
    row.update({k: summ.get(k) for k in METRIC_NAMES})
    row.update(status="ok" if summ["n_images"] else "no images", n_images=summ["n_images"],
               n_skipped=len(res["skipped"]), latency_ms=timer.ms_per_image,
               protocol_description=res["protocol_description"],
               resolution=_resolution(model, ds, root, split, device, spec.input_size))
    return row, res


def _write_results(out_dir: Path, result: Mapping[str, Any]) -> None:
    """results.json, results.csv (one row per model x dataset, skipped models included) and results.md."""
    from depthlab.io import atomic_write, write_json

    write_json(out_dir / "results.json", result)
    with atomic_write(out_dir / "results.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in result["rows"]:
            w.writerow({k: _csv_value(r.get(k)) for k in CSV_COLUMNS})
        for label, reason in result["skipped_models"].items():
            for ds in result["settings"]["datasets"]:
                w.writerow({"model": label, "dataset": ds, "status": "skipped", "error": reason})
    with atomic_write(out_dir / "results.md", "w") as f:
        f.write(format_markdown(result))


def format_markdown(result: Mapping[str, Any]) -> str:
    """results.md: a table per dataset (metrics, protocol, resolution, params, latency) + notes."""
    cols = ["model", "kind", "protocol", "domain", "AbsRel", "RMSE", "δ1", "images", "resolution", "params (M)",
            "ms/image"]
    lines = ["# Zero-shot benchmark", "",
             f"Created {result['created']} with depthlab {result['depthlab_version']}; split "
             f"`{result['settings']['split']}`, limit {result['settings']['limit']}, device {result['settings']['device']}. "
             "ms/image = median wall time per image inside the model's forward over the evaluation's calls, the "
             "first (warm-up) call excluded; pre/post-processing excluded. domain: **in-domain** = the model's "
             "weights were trained on this dataset (its `train_datasets`), so the score is not zero-shot.", ""]
    for ds in result["settings"]["datasets"]:
        lines += [f"## {ds}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        described: dict[str, str] = {}
        for r in result["rows"]:
            if r["dataset"] != ds:
                continue
            if r.get("status") == "failed":
                lines.append(f"| {r['model']} | {r['output_kind']} | {r.get('protocol', '')} | {domain_label(r)} | "
                             f"failed: {r['error']} |" + " |" * (len(cols) - 5))
                continue
            described[r["protocol"]] = r.get("protocol_description", "")
            lines.append("| " + " | ".join([
                r["model"], r["output_kind"], f"`{r['protocol']}`", domain_label(r), _fmt(r.get("abs_rel")),
                _fmt(r.get("rmse")),
                _fmt(r.get("delta1")), str(r.get("n_images", "")), str(r.get("resolution") or ""),
                _fmt((r.get("params") or 0) / 1e6, 3), _fmt(r.get("latency_ms"), 1)]) + " |")
        lines.append("")
        for name, desc in described.items():
            lines.append(f"- `{name}`: {desc}")
        fig = result.get("figures", {}).get(ds)
        if fig and "path" in fig:
            lines += ["", f"![{ds}]({Path(fig['path']).name})"]
        lines.append("")
    if result.get("skipped_models"):
        lines += ["## Skipped models", ""]
        lines += [f"- {m}: {why}" for m, why in result["skipped_models"].items()]
        lines.append("")
    lines += ["## Protocol per output kind", "", "| dataset | metric | disparity | relative |", "|---|---|---|---|"]
    lines += [f"| {r['dataset']} | `{r['metric']}` | `{r['disparity']}` | `{r['relative']}` |"
              for r in result["protocol_mapping"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Small helpers


def domain_label(row: Mapping[str, Any], markdown: bool = True) -> str:
    """"in-domain" (bold in Markdown) when the row's model was trained on the row's dataset, else "zero-shot"."""
    if row.get("in_domain"):
        return "**in-domain**" if markdown else "in-domain"
    return "zero-shot"


def _ok(rows: Iterable[dict], label: str, ds: str) -> bool:
    return any(r["model"] == label and r["dataset"] == ds and r.get("status") == "ok" for r in rows)


def _resolution(model: nn.Module, dataset: str, root, split: str, device: str, input_size="auto") -> str | None:
    """``HxW`` the network sees for the dataset's first image (None if unknown)."""
    from depthlab.data import create_dataset
    from depthlab.predictor import Predictor

    try:
        s = create_dataset(dataset, root=root, split=split)[0]
        h, w = torch.as_tensor(s["image"]).shape[-2:]
        nh, nw = Predictor(model, device=device, input_size=input_size).network_size(int(h), int(w))
        return f"{nh}x{nw}"
    except Exception:
        return None


def _machine() -> dict[str, Any]:
    import platform

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}



def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # round-trips exactly: float(csv cell) == the JSON number
    return v


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


__all__ = ["run_benchmark", "protocol_for", "dataset_preset", "dataset_family", "in_domain", "domain_label",
           "protocol_table", "parse_model_spec", "ModelSpec", "format_markdown", "DATASET_PRESETS", "AFFINE_PRESETS"]
