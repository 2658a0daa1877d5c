"""Report figures drawn with matplotlib (Agg backend, PNG files that the HTML report embeds).

* :func:`depth_rows_figure` -- per sample one row: RGB | ground truth | each run (one shared depth colour
  scale per row, with its colour bar) | each run's absolute error map (shared error scale, colour bar);
* :func:`curves_figure` -- train and validation loss curves of every run (CSV logs);
* :func:`per_batch_loss_figure` -- the loss of every test batch, one line per run;
* :func:`experiment_figures` -- all of the above for a ``run_experiment`` result;
* :func:`save_comparison_figure` -- the benchmark's RGB | ground truth | each model figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["depth_rows_figure", "curves_figure", "integer_xaxis", "per_batch_loss_figure", "experiment_figures", "shared_range",
           "save_comparison_figure"]

DPI = 80


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    from depthlab.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return str(path)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _hw(x) -> np.ndarray:
    a = _np(x).astype(np.float32)
    while a.ndim > 2:
        a = a[0]
    return a


def _resize_hw(a: np.ndarray, shape) -> np.ndarray:
    """An ``(h,w)`` map -> ``shape`` with :func:`depthlab.processing.resize_to` (bilinear)."""
    import torch

    from depthlab.processing import resize_to

    return resize_to(torch.from_numpy(np.ascontiguousarray(a))[None, None], shape)[0, 0].numpy()


def shared_range(gt: np.ndarray, valid: np.ndarray, percentiles=(2, 98)) -> tuple[float, float]:
    """The colour range of a row: percentiles of the valid ground truth (predictions share it)."""
    vals = gt[valid & np.isfinite(gt)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, percentiles)
    return float(lo), float(max(hi, lo + 1e-6))


def depth_rows_figure(samples: Sequence[dict], predictions: dict[str, Sequence[np.ndarray]], path: Path,
                      cmap: str = "Spectral_r", max_error: float | None = None, image_label: str | None = None,
                      truth_label: str = "ground truth", unit: str = "depth [m]", error_maps: bool = True) -> str:
    """One row per sample: RGB | ground truth | each run | colour bar | each run's |error| | colour bar.

    The RGB column is titled with the sample's ``meta["category"]`` (when it has one) and name, or
    ``image_label``; ``truth_label`` and ``unit`` (colour bar) name the ground truth (e.g. ``LiDAR`` and
    ``height [m]`` for the aerial study); ``error_maps=False`` leaves out the error columns.

    ``samples``: dicts with ``image`` (3,H,W) in [0,1], ``depth`` (1,H,W) metres, ``mask`` and ``meta``;
    ``predictions``: run label -> one (H,W) depth map (metres) per sample. A row shares ONE depth
    scale (2nd..98th percentile of its valid ground truth) for GT and every run, and one error scale
    (0 .. 98th percentile of its runs' errors, or ``max_error``); invalid GT pixels are blank. ``cmap`` is
    reversed for depth, as everywhere in depthlab: with ``Spectral_r`` near is red and far is blue.
    """
    plt = _plt()
    # the colormap is named as for `depthlab predict` (Spectral_r): depth maps use it reversed so that
    # near is warm there and here alike (depthlab.viz.colorize(..., reverse=True) for depth)
    cmap = plt.get_cmap(cmap).reversed()
    labels = list(predictions)
    k = len(labels)
    widths = [1, 1] + [1] * k + [0.07] + ([1] * k + [0.07] if error_maps else [])
    cell = 1.7
    fig, axes = plt.subplots(len(samples), len(widths), figsize=(cell * (2 + 2 * k) + 0.8, cell * len(samples)),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, s in enumerate(samples):
        row = axes[i]
        rgb = np.clip(_np(s["image"]).transpose(1, 2, 0), 0, 1)
        gt = _hw(s["depth"])
        valid = _hw(s.get("mask", gt > 0)).astype(bool) & (gt > 0)
        lo, hi = shared_range(gt, valid)
        meta = s.get("meta") or {}
        name = str(meta.get("name", f"sample {i}"))
        name = name if len(name) < 22 else name[:20] + ".."
        head = f"{image_label}: " if image_label else ""
        row[0].imshow(rgb)
        row[0].set_title(head + (f"{meta['category']}\n{name}" if meta.get("category") else name), fontsize=8)
        im = row[1].imshow(np.where(valid, gt, np.nan), cmap=cmap, vmin=lo, vmax=hi)
        row[1].set_title(truth_label, fontsize=8)
        errs = []
        for j, label in enumerate(labels):
            pred = _resize_hw(_hw(predictions[label][i]), gt.shape)
            row[2 + j].imshow(pred, cmap=cmap, vmin=lo, vmax=hi)
            row[2 + j].set_title(label if len(label) < 22 else label[:20] + "..", fontsize=8)
            errs.append(np.where(valid, np.abs(pred - gt), np.nan))
        cax = row[2 + k]
        cax.axis("on")
        cb = fig.colorbar(im, cax=cax)
        cb.set_label(unit, fontsize=7)
        cb.ax.tick_params(labelsize=6)
        if error_maps:
            _error_columns(fig, row[3 + k:], errs, labels, max_error)
    fig.tight_layout(pad=0.3)
    return _save(fig, Path(path))


def _error_columns(fig, axes, errs: list[np.ndarray], labels: list[str], max_error: float | None) -> None:
    """Each run's |error| map on one shared scale (0 .. 98th percentile, or ``max_error``), then its colour bar."""
    finite = np.concatenate([e[np.isfinite(e)] for e in errs]) if errs else np.zeros(0)
    emax = float(max_error) if max_error is not None else (float(np.percentile(finite, 98)) if finite.size else 1.0)
    emax = max(emax, 1e-6)
    eim = None
    for j, err in enumerate(errs):
        eim = axes[j].imshow(err, cmap="magma", vmin=0.0, vmax=emax)
        axes[j].set_title(f"|error| {labels[j]}"[:24], fontsize=7)
    if eim is not None:
        cax = axes[len(errs)]
        cax.axis("on")
        cb = fig.colorbar(eim, cax=cax)
        cb.set_label("abs. error [m]", fontsize=7)
        cb.ax.tick_params(labelsize=6)


def integer_xaxis(ax) -> None:
    """Whole-number ticks on an x axis of steps, epochs or batches: the plotted values themselves when there are
    few (one point would otherwise get fractional ticks around it), else MaxNLocator(integer=True)."""
    from matplotlib.ticker import MaxNLocator

    xs = sorted({float(x) for line in ax.get_lines() for x in line.get_xdata()})
    if 0 < len(xs) <= 12:
        ax.set_xticks(xs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves_figure(curves: dict[str, dict[str, list]], path: Path) -> str:
    """Training and validation loss against the optimiser step, one line per run: one panel per curve that
    some run logged (a study without a validation split gets no empty validation panel)."""
    plt = _plt()
    panels = [(key, title) for key, title in (("train", "training loss"), ("val", "validation loss"))
              if any(c.get(key) for c in curves.values())] or [("train", "training loss")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for label, c in curves.items():
            pts = c.get(key) or []
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 6 else None, markersize=3, label=label, linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        integer_xaxis(ax)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[0][::-1]:  # one legend, on a panel that has lines
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
            break
    fig.tight_layout()
    return _save(fig, Path(path))


def per_batch_loss_figure(losses: dict[str, list[float]], path: Path, common: dict[str, list[float]] | None = None,
                          common_label: str = "common loss") -> str:
    """The run's own loss on every test batch (x = batch index), one line per run; with ``common`` (run ->
    per-batch values of one loss shared by all runs, e.g. Huber on metres) a second panel beside it."""
    plt = _plt()
    panels = [("own objective per test batch" if common else "loss per test batch", losses)]
    if common:
        panels.append((f"{common_label} per test batch (all runs)", common))
    fig, axes = plt.subplots(1, len(panels), figsize=(9 if len(panels) == 1 else 12, 3.0), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        for label, ys in series.items():
            if ys:
                ax.plot(range(len(ys)), ys, marker="o", markersize=3, linewidth=1.2,
                        label=f"{label} (mean {np.mean(ys):.3g})")
        integer_xaxis(ax)
        ax.set_xlabel("test batch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if any(series.values()):
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, Path(path))


def experiment_figures(results: dict[str, Any], out: Path, eval_sets: dict) -> dict[str, Any]:
    """Draw the figures of an experiment into ``out/figures``; returns their paths relative to ``out``."""
    out = Path(out)
    ok = [r for r in results.get("runs", []) if r.get("status") == "ok"]
    figs: dict[str, Any] = {"samples": {}}
    if not ok:
        return figs
    opts = results.get("report") or {}
    cmap = opts.get("colormap", "Spectral_r")
    curves = {r["id"]: r.get("curves") or {} for r in ok}
    if any(c.get("train") or c.get("val") for c in curves.values()):
        figs["curves"] = str(Path(curves_figure(curves, out / "figures" / "curves.png")).relative_to(out))
    losses = {r["id"]: r.get("test_loss") or [] for r in ok}
    common = {r["id"]: (r.get("common_test_loss") or {}).get("batches") or [] for r in ok}
    labels = [(r.get("common_test_loss") or {}).get("label") for r in ok]
    if any(losses.values()):
        path = per_batch_loss_figure(losses, out / "figures" / "test_loss.png", common if any(common.values()) else None,
                                     next((lb for lb in labels if lb), "common loss"))
        figs["test_loss"] = str(Path(path).relative_to(out))
    for key, (ds, _protocol, n_show, *_rest) in eval_sets.items():
        samples = ds.head(n_show)
        preds = {}
        for r in ok:
            files = (r.get("sample_predictions") or {}).get(key) or []
            if len(files) >= len(samples):
                run_dir = out / r["run_dir"]
                preds[r["id"]] = [np.load(run_dir / f) for f in files[:len(samples)]]
        if samples and preds:
            p = depth_rows_figure(samples, preds, out / "figures" / f"samples_{key}.png", cmap=cmap,
                                  **{k: opts[k] for k in ("image_label", "truth_label", "unit", "error_maps")
                                     if k in opts})
            figs["samples"][key] = str(Path(p).relative_to(out))
    return figs


def save_comparison_figure(models: Mapping[str, Any], dataset: str, root, split: str, path,
                           n_rows: int = 3, device: str = "cpu",
                           dataset_presets: Mapping[str, str] | None = None,
                           input_sizes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """RGB | GT | each model for the first ``n_rows`` samples with valid ground truth; one depth colour scale
    (metres, ground truth's 2-98th percentiles) per row; affine-invariant predictions aligned as the protocol
    says (:func:`depthlab.evaluation.benchmark.protocol_for`) before display. Returns ``{"path", "rows",
    "columns", "panels"}`` (panels counted on the figure). Drawn by ``depthlab benchmark``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from depthlab.data import create_dataset
    from depthlab.io import atomic_write
    from depthlab.predictor import Predictor
    from depthlab.viz.colorize import get_cmap

    plt = _plt()
    ds = create_dataset(dataset, root=root, split=split)
    sizes = dict(input_sizes or {})  # the same network input size as the scored numbers
    predictors = {lbl: Predictor(m, device=device, input_size=sizes.get(lbl, "auto")) for lbl, m in models.items()}
    samples = []
    for i in range(len(ds)):
        if len(samples) >= n_rows:
            break
        try:
            s = ds[i]
        except Exception:  # unreadable sample: the evaluation reports it; the figure takes the next one
            continue
        if (_np(s["depth"]) > 0).any():
            samples.append(s)
    columns = ["RGB", "ground truth", *models]
    if not samples:
        raise ValueError(f"{dataset}: no sample with ground truth for the figure")
    fig, axes = plt.subplots(len(samples), len(columns), squeeze=False,
                             figsize=(2.6 * len(columns) + 0.8, 2.2 * len(samples)), constrained_layout=True)
    cmap = "Spectral"  # depth: near = warm (colorize's Spectral_r reversed)
    for r, s in enumerate(samples):
        panels, (vmin, vmax) = _comparison_panels(s, predictors, cmap, dataset, root, dataset_presets)
        for c, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.imshow(panel)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
        axes[r][0].set_ylabel(str((s.get("meta") or {}).get("name", r)), fontsize=7)
        sm = ScalarMappable(norm=Normalize(vmin, vmax), cmap=get_cmap(cmap))
        fig.colorbar(sm, ax=list(axes[r]), fraction=0.02, pad=0.01).set_label("m", fontsize=7)
    n_panels = sum(1 for ax in fig.axes if ax.images)
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return {"path": str(path), "rows": len(samples), "columns": columns, "panels": n_panels}


def _comparison_panels(s: dict, predictors: Mapping[str, Any], cmap: str, dataset: str, root,
                       dataset_presets) -> tuple[list[np.ndarray], tuple[float, float]]:
    """One figure row: RGB, ground truth and each predictor's map (aligned per protocol) on one colour scale."""
    import torch

    from depthlab.evaluation.benchmark import protocol_for
    from depthlab.evaluation.runner import apply_protocol
    from depthlab.viz.colorize import colorize

    image = torch.as_tensor(s["image"]).float()
    gt = torch.as_tensor(s["depth"]).float().reshape(1, 1, *image.shape[-2:])
    mask = s.get("mask")
    mask = torch.as_tensor(mask).bool().reshape(gt.shape) if mask is not None else gt > 0
    valid_gt = mask & (gt > 0)
    vmin, vmax = shared_range(gt[0, 0].numpy(), valid_gt[0, 0].numpy())
    panels = [image.permute(1, 2, 0).clamp(0, 1).numpy(),
              colorize(gt[0, 0], cmap=cmap, vmin=vmin, vmax=vmax, mask=valid_gt[0, 0])]
    for pred in predictors.values():
        raw = pred.predict_tensor(image[None]).float().cpu()
        proto = protocol_for(pred.kind, dataset, root, dataset_presets)
        try:
            final, _ = apply_protocol(raw, gt, proto.replace(crop="none"), mask=valid_gt, pred_kind=pred.kind)
        except Exception:  # e.g. too few valid pixels to align: show the raw map
            final = raw
        panels.append(colorize(final[0, 0], cmap=cmap, vmin=vmin, vmax=vmax))
    return panels, (vmin, vmax)
