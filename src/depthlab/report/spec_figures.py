"""Figures and tables an experiment spec asks for by name (``report.figures``), drawn after the runs.

Each entry is ``{name, kind, runs, title, caption}``; ``runs`` is a list of run ids or one
``fnmatch`` pattern (``"eq11_*"``). Kinds:

* ``sweep`` -- a final value against a swept setting, one point per run: ``x`` is a dotted key of
  the run's resolved config (``loss.terms.ssim``), ``y`` a list of :data:`SWEEP_VALUES` or metric
  names of the ``test`` evaluation (default ``[train_loss, val_loss]``), ``xlabel`` the axis label.
* ``curves`` -- training and validation loss of the runs per epoch (``per: epoch``, default) or per
  optimiser step (``per: step``); ``curves: [validation]`` draws one of the two only, ``ylabel`` names
  the loss (default ``loss``).
* ``samples`` -- RGB | ground truth | prediction rows of the ``test`` evaluation for the runs only.
* ``table`` -- the metrics table of one evaluation (``evaluation``, default ``test``) for the runs only,
  in the order listed, with the evaluation's protocol (a study's ablation tables that share a test set).

Every figure becomes a report section (title, caption, a table of the plotted numbers, the PNG in
``figures/<name>.png``), so the HTML and Markdown reports both carry it.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from depthlab.config import check_fields
from depthlab.errors import one_line

__all__ = ["figure_sections", "FigureSpec", "SWEEP_VALUES", "final_value"]

SWEEP_VALUES = {
    "train_loss": "training loss of the last epoch (its mean over the epoch's steps)",
    "val_loss": "validation loss after the last epoch",
    "test_loss": "the run's objective on the test split (mean over batches)",
}


@dataclass
class FigureSpec:
    """One ``report.figures`` entry (typed like the rest of an experiment spec: depthlab.config.check_fields)."""

    name: str  # figures/<name>.png
    kind: Literal["sweep", "curves", "samples", "table"]
    runs: list[str] | str = "*"  # run ids, or one fnmatch pattern
    title: str | None = None  # None: the name
    caption: str | None = None
    x: str | None = None  # sweep: dotted key of the run's resolved config
    xlabel: str | None = None  # sweep: None = x
    y: list[str] = field(default_factory=lambda: ["train_loss", "val_loss"])  # sweep: SWEEP_VALUES or test metrics
    ylabel: str | None = None  # None: "final combined loss" (sweep), "loss" (curves)
    per: Literal["epoch", "step"] = "epoch"  # curves
    curves: list[Literal["training", "validation"]] = field(default_factory=lambda: ["training", "validation"])
    evaluation: str = "test"  # samples / table: the evaluation whose figure samples or metrics are shown


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


def _sweep(fig: FigureSpec, runs: list[dict], path: Path) -> dict:
    x_key = fig.x
    if not x_key:
        raise ValueError("a sweep figure needs 'x' (a dotted config key, e.g. loss.terms.ssim)")
    ys = list(fig.y)
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
    xname = fig.xlabel or x_key
    ax.set_xlabel(xname, fontsize=8)
    ax.set_ylabel(fig.ylabel or "final combined loss", fontsize=8)
    _finish(ax, fig)
    table = [{"run": row["run"], xname: row["x"], **{y: row[y] for y in ys}} for row in rows]
    # no "best" marks: every point is a different objective, so the losses are not ranked against each other
    return {"path": path, "figure": f, "table": {"rows": table, "columns": [xname, *ys], "mark_best": False}}


def _curves(fig: FigureSpec, runs: list[dict], path: Path) -> dict:
    per = fig.per
    keys = ("train_epoch", "val_epoch") if per == "epoch" else ("train", "val")
    f, ax = _axes()
    rows = []
    for r in runs:
        curves = r.get("curves") or {}
        for key, label in zip(keys, ("training", "validation")):
            pts = (curves.get(key) or []) if label in fig.curves else []
            if pts:
                name = label if len(runs) == 1 else f"{r['id']} {label}"
                ax.plot(*zip(*pts), marker="o" if len(pts) < 12 else None, markersize=3, linewidth=1.2, label=name)
                rows.extend({"run": r["id"], "curve": label, per: int(p[0]), "loss": p[1]} for p in pts)
    from depthlab.report.figures import integer_xaxis

    integer_xaxis(ax)
    ax.set_xlabel(per, fontsize=8)
    ax.set_ylabel(fig.ylabel or "loss", fontsize=8)
    _finish(ax, fig)
    return {"path": path, "figure": f, "table": {"rows": rows, "columns": ["curve", per, "loss"], "mark_best": False}}


def _finish(ax, fig: FigureSpec) -> None:
    ax.set_title(fig.title or fig.name, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    ax.figure.tight_layout()


def _samples(fig: FigureSpec, runs: list[dict], path: Path, out: Path, eval_sets: dict) -> dict:
    from depthlab.report.figures import depth_rows_figure

    key = fig.evaluation
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


def _table(fig: FigureSpec, runs: list[dict], results: dict) -> dict:
    """The metrics table of evaluation ``fig.evaluation`` for ``runs`` (in the listed order), with its protocol."""
    from depthlab.report.html import metric_rows, table_columns

    key = fig.evaluation
    ev = next((e for e in results.get("evaluations") or [] if e.get("key") == key and e.get("status") == "ok"), None)
    if ev is None:
        raise ValueError(f"no evaluation {key!r} to tabulate")
    order = [r["id"] for r in runs]
    if not isinstance(fig.runs, str):  # a list: the study's row order
        order = [w for w in map(str, fig.runs) if w in order]
    rows = {row["run"]: row for row in metric_rows(results, key)}
    return {"id": f"table-{fig.name}", "first": "run", "rows": [rows[i] for i in order],
            "columns": table_columns(results, key), "protocol": ev["protocol"],
            "protocol_description": ev["protocol_description"]}


def _missing(fig: FigureSpec, runs: list[dict]) -> str | None:
    """The caption, plus which listed runs this experiment did not finish (e.g. the smoke form runs fewer)."""
    if isinstance(fig.runs, str):
        return fig.caption
    done = {r["id"] for r in runs}
    absent = [str(w) for w in fig.runs if str(w) not in done]
    note = f"Not in this experiment (no finished run): {', '.join(absent)}." if absent else ""
    return " ".join(x for x in (fig.caption, note) if x) or None


def _one(fig: FigureSpec, results: dict, out: Path, eval_sets: dict) -> dict:
    name = fig.name
    runs = _select(results.get("runs") or [], fig.runs)
    if not runs:
        raise ValueError(f"no finished run matches {fig.runs!r}")
    path = out / "figures" / f"{name}.png"
    if fig.kind == "table":
        return {"title": fig.title or name, "status": "ok", "message": _missing(fig, runs), "figures": [],
                "tables": [_table(fig, runs, results)]}
    if fig.kind == "samples":
        drawn = _samples(fig, runs, path, out, eval_sets)
    else:
        drawn = (_sweep if fig.kind == "sweep" else _curves)(fig, runs, path)
        _write(drawn["figure"], path)
    section: dict[str, Any] = {"title": fig.title or name, "status": "ok", "message": _missing(fig, runs),
                               "figures": [str(path.relative_to(out))], "tables": []}
    if drawn["table"]:
        section["tables"].append({"id": f"figure-{name}", "first": "run", **drawn["table"]})
    return section


def figure_sections(results: dict, out: Path, eval_sets: dict) -> list[dict]:
    """One report section per ``report.figures`` entry (a :class:`FigureSpec` as a mapping, as ``results.json``
    holds it); a figure that cannot be drawn says why."""
    sections = []
    for i, fig in enumerate((results.get("report") or {}).get("figures") or []):
        try:
            spec = check_fields(FigureSpec, dict(fig), f"report.figures[{i}]")
            sections.append(_one(spec, results, Path(out), eval_sets))
        except Exception as e:  # a missing run or value must not lose the rest of the report
            title = (fig or {}).get("title") or (fig or {}).get("name") or f"report.figures[{i}]"
            sections.append({"title": title, "status": "failed", "message": f"not drawn: {one_line(e)}"})
    return sections
