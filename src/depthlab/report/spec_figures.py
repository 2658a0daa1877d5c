"""Figures an experiment spec asks for by name (``report.figures``), drawn after the runs.

Each entry is ``{name, kind, runs, title, caption}``; ``runs`` is a list of run ids or one
``fnmatch`` pattern (``"eq11_*"``). Kinds:

* ``sweep`` -- a final value against a swept setting, one point per run: ``x`` is a dotted key of
  the run's resolved config (``loss.terms.ssim``), ``y`` a list of :data:`SWEEP_VALUES` or metric
  names of the ``test`` evaluation (default ``[train_loss, val_loss]``), ``xlabel`` the axis label.
* ``curves`` -- training and validation loss of the runs per epoch (``per: epoch``, default) or per
  optimiser step (``per: step``).
* ``samples`` -- RGB | ground truth | prediction rows of the ``test`` evaluation for the runs only.

Every figure becomes a report section (title, caption, a table of the plotted numbers, the PNG in
``figures/<name>.png``), so the HTML and Markdown reports both carry it.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from depthlab.errors import one_line

__all__ = ["figure_sections", "SWEEP_VALUES", "final_value"]

SWEEP_VALUES = {
    "train_loss": "training loss of the last epoch (its mean over the epoch's steps)",
    "val_loss": "validation loss after the last epoch",
    "test_loss": "the run's objective on the test split (mean over batches)",
}
KINDS = ("sweep", "curves", "samples")


def _select(runs: list[dict], which) -> list[dict]:
    """The ok runs named by ``which`` (list of ids, or one fnmatch pattern), in the experiment's order."""
    ok = [r for r in runs if r.get("status") == "ok"]
    if isinstance(which, str):
        return [r for r in ok if fnmatch.fnmatchcase(r["id"], which)]
    wanted = [str(w) for w in which or []]
    return [r for r in ok if r["id"] in wanted]


def _dotted(cfg: dict, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def final_value(run: dict, name: str) -> float | None:
    """A run's final ``train_loss`` / ``val_loss`` / ``test_loss`` (:data:`SWEEP_VALUES`) or test metric."""
    curves = run.get("curves") or {}
    if name in ("train_loss", "val_loss"):
        per_epoch = curves.get(name.replace("_loss", "_epoch")) or curves.get(name.replace("_loss", "")) or []
        return float(per_epoch[-1][1]) if per_epoch else None
    if name == "test_loss":
        losses = run.get("test_loss") or []
        return float(np.mean(losses)) if losses else None
    value = ((run.get("metrics") or {}).get("test") or {}).get(name)
    return None if value is None else float(value)


def _axes():
    """A figure and its axes through matplotlib's object API (no pyplot state, no backend switch)."""
    from matplotlib.figure import Figure

    f = Figure(figsize=(5.5, 3.4))
    return f, f.add_subplot()


def _write(f, path: Path) -> None:
    from depthlab.io import atomic_write
    from depthlab.report.figures import DPI

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        f.savefig(fh, format="png", dpi=DPI, bbox_inches="tight")


def _sweep(fig: dict, runs: list[dict], path: Path) -> dict:
    x_key = fig.get("x")
    if not x_key:
        raise ValueError("a sweep figure needs 'x' (a dotted config key, e.g. loss.terms.ssim)")
    ys = list(fig.get("y") or ["train_loss", "val_loss"])
    rows = []
    for r in runs:
        x = _dotted(r.get("config") or {}, x_key)
        rows.append({"run": r["id"], "x": 0.0 if x is None else float(x), **{y: final_value(r, y) for y in ys}})
    rows.sort(key=lambda row: row["x"])
    f, ax = _axes()
    for y in ys:
        pts = [(row["x"], row[y]) for row in rows if row[y] is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=4, linewidth=1.2, label=y.replace("_", " "))
    ax.set_xlabel(fig.get("xlabel") or x_key, fontsize=8)
    ax.set_ylabel(fig.get("ylabel") or "final combined loss", fontsize=8)
    _finish(ax, fig)
    xname = fig.get("xlabel") or x_key
    table = [{"run": row["run"], xname: row["x"], **{y: row[y] for y in ys}} for row in rows]
    # no "best" marks: every point is a different objective, so the losses are not ranked against each other
    return {"path": path, "figure": f, "table": {"rows": table, "columns": [xname, *ys], "mark_best": False}}


def _curves(fig: dict, runs: list[dict], path: Path) -> dict:
    per = fig.get("per", "epoch")
    if per not in ("epoch", "step"):
        raise ValueError(f"per must be epoch or step, got {per!r}")
    keys = ("train_epoch", "val_epoch") if per == "epoch" else ("train", "val")
    f, ax = _axes()
    rows = []
    for r in runs:
        curves = r.get("curves") or {}
        for key, label in zip(keys, ("training", "validation")):
            pts = curves.get(key) or []
            if pts:
                name = label if len(runs) == 1 else f"{r['id']} {label}"
                ax.plot(*zip(*pts), marker="o" if len(pts) < 12 else None, markersize=3, linewidth=1.2, label=name)
                rows.extend({"run": r["id"], "curve": label, per: int(p[0]), "loss": p[1]} for p in pts)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(per, fontsize=8)
    ax.set_ylabel("combined loss", fontsize=8)
    _finish(ax, fig)
    return {"path": path, "figure": f, "table": {"rows": rows, "columns": ["curve", per, "loss"], "mark_best": False}}


def _finish(ax, fig: dict) -> None:
    ax.set_title(fig.get("title") or fig["name"], fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    ax.figure.tight_layout()


def _samples(fig: dict, runs: list[dict], path: Path, out: Path, eval_sets: dict) -> dict:
    from depthlab.report.figures import depth_rows_figure

    key = fig.get("evaluation", "test")
    if key not in eval_sets:
        raise ValueError(f"no evaluation {key!r} to draw samples from")
    ds, _protocol, n_show, *_ = eval_sets[key]
    samples = ds.head(n_show)
    preds = {}
    for r in runs:
        files = ((r.get("sample_predictions") or {}).get(key) or [])[:len(samples)]
        if samples and len(files) == len(samples):
            preds[r["id"]] = [np.load(out / r["run_dir"] / name) for name in files]
    if not preds:
        raise ValueError(f"the selected runs stored no sample predictions for {key!r}")
    depth_rows_figure(samples, preds, path)
    return {"path": path, "figure": None, "table": None}


def _one(fig: dict, results: dict, out: Path, eval_sets: dict) -> dict:
    name, kind = fig.get("name"), fig.get("kind")
    if not name or kind not in KINDS:
        raise ValueError(f"report.figures entries need 'name' and 'kind' (one of {', '.join(KINDS)}), got {fig!r}")
    runs = _select(results.get("runs") or [], fig.get("runs"))
    if not runs:
        raise ValueError(f"no finished run matches {fig.get('runs')!r}")
    path = out / "figures" / f"{name}.png"
    if kind == "samples":
        drawn = _samples(fig, runs, path, out, eval_sets)
    else:
        drawn = (_sweep if kind == "sweep" else _curves)(fig, runs, path)
        _write(drawn["figure"], path)
    section: dict[str, Any] = {"title": fig.get("title") or name, "status": "ok", "message": fig.get("caption"),
                               "figures": [str(path.relative_to(out))], "tables": []}
    if drawn["table"]:
        section["tables"].append({"id": f"figure-{name}", "first": "run", **drawn["table"]})
    return section


def figure_sections(results: dict, out: Path, eval_sets: dict) -> list[dict]:
    """One report section per ``report.figures`` entry; a figure that cannot be drawn says why."""
    sections = []
    for i, fig in enumerate((results.get("report") or {}).get("figures") or []):
        try:
            sections.append(_one(dict(fig), results, Path(out), eval_sets))
        except Exception as e:  # a missing run or value must not lose the rest of the report
            title = (fig or {}).get("title") or (fig or {}).get("name") or f"report.figures[{i}]"
            sections.append({"title": title, "status": "failed", "message": f"not drawn: {one_line(e)}"})
    return sections
