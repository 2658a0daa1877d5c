"""Report figures drawn with matplotlib (Agg backend, PNG files that the HTML report embeds).

* :func:`depth_rows_figure` -- per sample one row: RGB | ground truth | each run (one shared depth colour
  scale per row, with its colour bar) | each run's absolute error map (shared error scale, colour bar);
* :func:`curves_figure` -- train and validation loss curves of every run (CSV logs);
* :func:`per_batch_loss_figure` -- the loss of every test batch, one line per run;
* :func:`experiment_figures` -- all of the above for a ``run_experiment`` result.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["depth_rows_figure", "curves_figure", "per_batch_loss_figure", "experiment_figures", "shared_range"]

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


def curves_figure(curves: dict[str, dict[str, list]], path: Path) -> str:
    """Two panels: training loss and validation loss against the optimiser step, one line per run."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, c in curves.items():
        for ax, key in ((a, "train"), (b, "val")):
            pts = c.get(key) or []
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 6 else None, markersize=3, label=label, linewidth=1.2)
    for ax, title in ((a, "training loss"), (b, "validation loss")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in (b, a):  # one legend, on a panel that has lines
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
            break
    fig.tight_layout()
    return _save(fig, Path(path))


def per_batch_loss_figure(losses: dict[str, list[float]], path: Path, common: dict[str, list[float]] | None = None,
                          common_label: str = "common loss") -> str:
    """The run's own loss on every test batch (x = batch index), one line per run; with ``common`` (run ->
    per-batch values of one loss shared by all runs, e.g. Huber on metres) a second panel beside it."""
    from matplotlib.ticker import MaxNLocator

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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
