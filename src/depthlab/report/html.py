"""The experiment report: one self-contained HTML file (inline CSS, images as base64 PNG, no script,
no external resource) and a Markdown twin with the same tables.

Sections: overview (runs, failures), one metrics table per evaluation with its protocol name and
full settings (best value per column in bold, direction-aware: lower is better except the delta
accuracies), speed/size columns (parameters, CPU latency, FPS), per-category breakdown, loss
curves, per-batch test loss, depth-map figures, extra sections (e.g. the demo's real-data
evaluation, a zero-shot benchmark) and the resolved config of every run in ``<details>``.

Every number cell carries ``data-run``, ``data-col`` and ``data-value`` (the exact JSON value) so
that tools and tests can read the table back; the visible text is :func:`fmt` of the same value.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from depthlab import metrics

__all__ = ["fmt", "write_report", "write_markdown", "render_html", "render_markdown", "metric_rows", "loss_rows",
           "HIGHER_IS_BETTER", "TABLE_COLUMNS"]

HIGHER_IS_BETTER = metrics.HIGHER_IS_BETTER | {"fps"}
TABLE_COLUMNS = tuple(k for k in metrics.METRIC_NAMES if k not in ("mae", "mse"))  # the papers' columns
_LOWER_IS_BETTER = {*metrics.METRIC_NAMES, *metrics.NORMALIZED_NAMES, "latency_ms"} - HIGHER_IS_BETTER
SPEED_COLUMNS = ("params", "latency_ms", "fps")
HEADERS = {"abs_rel": "AbsRel", "sq_rel": "SqRel", "rmse": "RMSE", "rmse_log": "RMSE log", "log10": "log10",
           "silog": "SILog", "delta1": "δ<1.25", "delta2": "δ<1.25²", "delta3": "δ<1.25³", "params": "params",
           "latency_ms": "latency [ms]", "fps": "FPS", "n_images": "images",
           "abs_rel_untrained": "AbsRel untrained", "rmse_untrained": "RMSE untrained",
           "l1_norm": "L1 [0,1]", "mse_norm": "MSE [0,1]",
           "train_loss_last": "last training loss", "test_loss": "test loss", "common_test_loss": "common test loss"}
DOMAIN_NOTE = ("domain: in-domain = the run's weights were trained on images of this dataset (its pretrained "
               "weights' training data, or the run's own training set), so the score is not zero-shot.")
LOSS_COLUMNS = ("objective", "train_loss_last", "test_loss", "common_test_loss", "weights")

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}.scroll{overflow-x:auto}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.name,th.name{text-align:left}td.best{font-weight:bold;background:#e6f4e6}
tr.failed td{color:#a00;text-align:left;white-space:normal}.protocol{font-size:.85em;color:#444;background:#f8f8f8;padding:6px;border-left:3px solid #69c}
img{max-width:100%;border:1px solid #eee}.note{color:#666;font-size:.85em}pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:.8em}
.warn{color:#a60}
"""


def fmt(value: Any, col: str = "") -> str:
    """How a value is printed in the tables (HTML and Markdown)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if col == "params":
        return f"{value / 1e6:.3f} M"
    if col in ("latency_ms", "fps"):
        return f"{value:.1f}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def metric_columns(results: dict) -> list[str]:
    """Metric columns of the tables: a study's own (``l1_norm``/``mse_norm`` when the spec's evaluation
    asks for ``normalized_errors``) first, then :data:`TABLE_COLUMNS`."""
    extra = list(metrics.NORMALIZED_NAMES) if ((results.get("spec") or {}).get("evaluation") or {}).get("normalized_errors") else []
    return [*extra, *TABLE_COLUMNS]


def metric_rows(results: dict, key: str) -> list[dict[str, Any]]:
    """Rows of the metrics table of evaluation ``key``: ``{run, status, error, <metric>: value, params, ...}``."""
    rows = []
    for r in results.get("runs", []):
        row: dict[str, Any] = {"run": r["id"], "status": r.get("status"), "error": r.get("error")}
        if r.get("status") == "ok":
            m = (r.get("metrics") or {}).get(key) or {}
            row["domain"] = (r.get("domains") or {}).get(key)
            for c in metric_columns(results):
                row[c] = m.get(c)
            row["n_images"] = m.get("n_images")
            for c in SPEED_COLUMNS:
                row[c] = r.get(c)
        rows.append(row)
    return rows


def table_columns(results: dict, key: str) -> list[str]:
    """Columns of evaluation ``key``'s table. ``domain`` (in-domain / zero-shot, experiment.run_domain) comes first
    where it tells something: some run scored zero-shot there, or was evaluated without training (pretrained
    weights: a ZoeDepth scored on NYU is in-domain); a training study scored on its own test split leaves it out."""
    ok = [r for r in results.get("runs", []) if r.get("status") == "ok"]
    labels = [(r.get("domains") or {}).get(key) for r in ok]
    shown = any(labels) and ("zero-shot" in labels or any(r.get("trained") is False for r in ok))
    return [*(["domain"] if shown else []), *metric_columns(results), "n_images", *SPEED_COLUMNS]


def _best(rows: list[dict], col: str) -> Any:
    """The best value of ``col`` over the ok rows; None (nothing marked) unless there are two to compare."""
    vals = [r[col] for r in rows if r.get("status") == "ok" and isinstance(r.get(col), (int, float))]
    if len(vals) < 2:
        return None
    return max(vals) if col in HIGHER_IS_BETTER else min(vals)


def _table(rows: list[dict], columns: Iterable[str], first: str = "run", mark_best: bool = True,
           table_id: str = "") -> str:
    columns = list(columns)
    best = {c: _best(rows, c) for c in columns} if mark_best else {}
    out = [f'<div class="scroll"><table class="metrics" id="{_esc(table_id)}"><thead><tr><th class="name">{_esc(first)}</th>']
    for c in columns:
        arrow = "↑" if c in HIGHER_IS_BETTER else ("↓" if c in _LOWER_IS_BETTER else "")
        out.append(f'<th data-col="{_esc(c)}">{_esc(HEADERS.get(c, c))}{arrow}</th>')
    out.append("</tr></thead><tbody>")
    for r in rows:
        if r.get("status") not in (None, "ok"):
            out.append(f'<tr class="failed" data-run="{_esc(r[first])}"><td class="name">{_esc(r[first])}</td>'
                       f'<td colspan="{len(columns)}">failed: {_esc(r.get("error"))}</td></tr>')
            continue
        out.append(f'<tr data-run="{_esc(r[first])}"><td class="name">{_esc(r[first])}</td>')
        for c in columns:
            v = r.get(c)
            cls = ' class="best"' if mark_best and v is not None and v == best.get(c) and c != "n_images" else ""
            dv = "" if v is None else f' data-value="{_esc(json.dumps(v))}"'
            out.append(f'<td{cls} data-run="{_esc(r[first])}" data-col="{_esc(c)}"{dv}>{_esc(fmt(v, c))}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _md_table(rows: list[dict], columns: list[str], first: str = "run", mark_best: bool = True) -> str:
    best = {c: _best(rows, c) for c in columns} if mark_best else {}
    lines = ["| " + " | ".join([first] + [HEADERS.get(c, c) for c in columns]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for r in rows:
        if r.get("status") not in (None, "ok"):
            lines.append(f"| {r[first]} | failed: {str(r.get('error')).replace('|', '/')} |" + " |" * (len(columns) - 1))
            continue
        cells = []
        for c in columns:
            text = fmt(r.get(c), c)
            cells.append(f"**{text}**" if mark_best and r.get(c) is not None and r.get(c) == best.get(c)
                         and c != "n_images" else text)
        lines.append("| " + " | ".join([str(r[first])] + cells) + " |")
    return "\n".join(lines)


def _learning_rows(results: dict) -> list[dict]:
    rows = []
    for r in results.get("runs", []):
        u = r.get("untrained")
        if r.get("status") == "ok" and u:
            m = (r.get("metrics") or {}).get("test") or {}
            rows.append({"run": r["id"], "status": "ok", "abs_rel_untrained": u.get("abs_rel"),
                         "abs_rel": m.get("abs_rel"), "rmse_untrained": u.get("rmse"), "rmse": m.get("rmse")})
    return rows


def _objective(cfg: dict) -> str:
    """A run's training loss as written in its config: ``huber(delta=1.0)``, ``1*silog + 0.5*ssim``."""
    loss = (cfg or {}).get("loss") or {}
    terms, params = loss.get("terms") or {}, loss.get("params") or {}
    if isinstance(terms, str):
        terms = {terms: 1.0}
    if isinstance(terms, dict):
        terms = [{"name": n, "weight": w, "params": params.get(n)} for n, w in terms.items()]
    parts = []
    for t in terms:  # the list form: [{name, weight, params}]
        t = t if isinstance(t, dict) else {"name": t}
        w, p = float(t.get("weight", 1.0)), ", ".join(f"{k}={v}" for k, v in (t.get("params") or {}).items())
        parts.append(("" if w == 1.0 else f"{w:g}*") + str(t.get("name")) + (f"({p})" if p else ""))
    return " + ".join(parts)


def loss_rows(results: dict) -> list[dict]:
    """Per run: its objective, last training loss (per epoch when logged), mean test loss of its own objective,
    mean common test loss (``evaluation.common_loss``, the same loss on metres for every run) and how its
    weights started."""
    rows = []
    for r in results.get("runs", []):
        if r.get("status") != "ok" or not (r.get("test_loss") or r.get("weights")):
            continue
        curves = r.get("curves") or {}
        train = curves.get("train_epoch") or curves.get("train") or []
        common = (r.get("common_test_loss") or {}).get("batches") or []
        own = r.get("test_loss") or []
        trained = r.get("trained", True)  # an evaluation-only run (train: false) has no training objective
        rows.append({"run": r["id"], "status": "ok", "objective": _objective(r.get("config") or {}) if trained else None,
                     "train_loss_last": train[-1][1] if train else None,
                     "test_loss": sum(own) / len(own) if own else None,
                     "common_test_loss": sum(common) / len(common) if common else None,
                     "weights": r.get("weights")})
    return rows


def _common_label(results: dict) -> str | None:
    return next(((r.get("common_test_loss") or {}).get("label") for r in results.get("runs", [])
                 if (r.get("common_test_loss") or {}).get("label")), None)


def _losses_html(results: dict, base: Path) -> str:
    """The *Training and test losses* table and the per-batch test-loss figure."""
    p, figs, common = [], results.get("figures") or {}, _common_label(results)
    lrows = loss_rows(results)
    if lrows:
        p.append("<h2>Training and test losses</h2><p class=\"note\">test loss: the mean over test batches of each "
                 "run's own objective (not comparable across objectives)"
                 + (f"; common test loss: {_esc(common)}, the same loss on the predictions in metres at the ground "
                    "truth's resolution for every run" if common else "")
                 + "; last training loss: the last epoch's mean. weights: how the run's network started.</p>")
        p.append(_table(lrows, list(LOSS_COLUMNS), mark_best=False, table_id="losses"))
    if figs.get("test_loss") and (base / figs["test_loss"]).is_file():
        p.append("<h2>Test loss per batch</h2><p class=\"note\">Each run's own training objective on every batch "
                 "of the test split, in the run's own target encoding (compare runs with the same encoding)"
                 + ("; beside it the common test loss, comparable across runs" if common else "")
                 + f".</p><p>{_img(base / figs['test_loss'], 'test loss per batch')}</p>")
    return "".join(p)


def _category_rows(results: dict, key: str) -> list[dict]:
    rows = []
    for r in results.get("runs", []):
        for cat, m in ((r.get("per_category") or {}).get(key) or {}).items():
            rows.append({"run / category": f"{r['id']} / {cat}", "status": "ok", **m})
    return rows


def _section_html(sec: dict, base: Path) -> str:
    parts = [f"<h2>{_esc(sec.get('title', 'section'))}</h2>"]
    if sec.get("message"):
        cls = "warn" if sec.get("status") in ("skipped", "failed") else "note"
        parts.append(f'<p class="{cls}">{_esc(sec["message"])}</p>')
    for t in sec.get("tables") or []:
        if t.get("title"):
            parts.append(f"<h3>{_esc(t['title'])}</h3>")
        if t.get("protocol_description"):
            parts.append(f'<p class="protocol"><b>protocol: {_esc(t.get("protocol", ""))}</b> — '
                         f'{_esc(t["protocol_description"])}</p>')
        if t.get("caption"):
            parts.append(f'<p class="note">{_esc(t["caption"])}</p>')
        parts.append(_table(t["rows"], t["columns"], first=t.get("first", "run"), mark_best=t.get("mark_best", True),
                            table_id=t.get("id", "")))
    captions = sec.get("figure_captions") or []
    for i, f in enumerate(sec.get("figures") or []):
        p = base / f
        if p.is_file():
            if i < len(captions):
                parts.append(f"<h3>{_esc(captions[i])}</h3>")
            parts.append(f"<p>{_img(p, captions[i] if i < len(captions) else sec.get('title', 'figure'))}</p>")
    if sec.get("result") is not None:
        parts.append("<details><summary>raw result</summary><pre>"
                     + _esc(json.dumps(sec["result"], indent=1, default=str)[:20000]) + "</pre></details>")
    return "".join(parts)


def render_html(results: dict, base: Path) -> str:
    """The report of a ``run_experiment`` result as one HTML string (figures read from ``base``)."""
    base = Path(base)
    runs = results.get("runs", [])
    failed = [r for r in runs if r.get("status") != "ok"]
    title = results.get("title") or results.get("name", "experiment")
    p = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
         f"<h1>{_esc(title)}</h1>"]
    if results.get("description"):
        p.append(f"<p>{_esc(results['description'])}</p>")
    p.append(f'<p class="note">experiment <b>{_esc(results.get("name"))}</b>{" (smoke)" if results.get("smoke") else ""}'
             f" · {len(runs)} run(s), {len(failed)} failed · created {_esc(results.get('created', ''))}"
             f" · depthlab {_esc(results.get('depthlab_version', ''))}</p>")
    if results.get("message"):
        p.append(f'<p class="warn">{_esc(results["message"])}</p>')
    p.extend(_section_html(sec, base) for sec in results.get("sections_before", []) or [])
    p.extend(_evaluation_html(results, ev, base) for ev in results.get("evaluations", []))
    figs = results.get("figures") or {}
    if figs.get("curves") and (base / figs["curves"]).is_file():
        p.append("<h2>Loss curves</h2>" + f"<p>{_img(base / figs['curves'], 'loss curves')}</p>")
    p.append(_losses_html(results, base))
    p.extend(_section_html(sec, base) for sec in results.get("sections", []) or [])
    p.append(_runs_html(runs, failed))
    p.append("</body></html>")
    return "".join(p)


def _evaluation_html(results: dict, ev: dict, base: Path) -> str:
    """One evaluation's part of the report: protocol, metric table, learning check, per-category table, figure."""
    key = ev["key"]
    if ev.get("status") != "ok":
        return f"<h2>Results: {_esc(key)}</h2><p class=\"warn\">skipped: {_esc(ev.get('message'))}</p>"
    runs = results.get("runs", [])
    p = [f"<h2>{_esc(ev.get('title') or 'Results: ' + key)} ({_esc(ev['dataset'])} / {_esc(ev['split'])}, "
         f"{ev['n_samples']} images)</h2>",
         f'<p class="protocol"><b>protocol: {_esc(ev["protocol"])}</b> — {_esc(ev["protocol_description"])}'
         f'<br><code>{_esc(json.dumps(ev.get("protocol_settings"), default=str))}</code></p>']
    if isinstance(ev.get("protocol_spec"), dict):
        p.append(f'<p class="protocol">protocol by the model\'s output kind: '
                 f'<code>{_esc(json.dumps(ev["protocol_spec"]))}</code> (above: the metric one)</p>')
    columns = table_columns(results, key)
    p.append(_table(metric_rows(results, key), columns, table_id=f"metrics-{key}"))
    if "domain" in columns:
        p.append(f'<p class="note">{_esc(DOMAIN_NOTE)}</p>')
    threads = sorted({r.get("latency_threads") for r in runs if r.get("status") == "ok" and r.get("latency_threads")})
    engines = sorted({r.get("latency_backend") for r in runs if r.get("status") == "ok" and r.get("latency_backend")})
    p.append('<p class="note">Bold: best per column (lower is better, except δ and FPS). Latency: median CPU '
             "time of one forward pass at batch 1 and the run's input size"
             + (f", {'/'.join(map(str, threads))} torch thread(s)" if threads else "")
             + (f", backend {' / '.join(engines)}" if engines else "") + ".</p>")
    learn = _learning_rows(results) if key == "test" else []
    if learn:
        p.append("<h3>Learning check</h3><p class=\"note\">AbsRel / RMSE of the same architecture freshly "
                 "initialised (same seed) against the trained run, same test images and protocol.</p>")
        p.append(_table(learn, ["abs_rel_untrained", "abs_rel", "rmse_untrained", "rmse"], mark_best=False,
                        table_id="learning"))
    cat_rows = _category_rows(results, key)
    if cat_rows:
        p.append(f"<h3>Per category ({_esc(key)})</h3>")
        p.append('<p class="note">Each category averaged as the protocol averages (depthlab.evaluate per_category), images with that meta["category"] only.</p>')
        p.append(_table(cat_rows, ["abs_rel", "rmse", "delta1", "n_images"], first="run / category",
                        mark_best=False, table_id=f"categories-{key}"))
    fig = (results.get("figures") or {}).get("samples", {}).get(key)
    if fig and (base / fig).is_file():
        o = results.get("report") or {}
        rows = "One row per category" if o.get("samples_by") == "category" else "Per sample"
        errors = ", then each run's absolute error (one shared error scale per row)" if o.get("error_maps", True) else ""
        p.append(f"<h3>{_esc(ev.get('figure_title') or 'Depth maps')} ({_esc(key)})</h3><p class=\"note\">"
                 f"{rows}: {_esc(o.get('image_label') or 'RGB')} | {_esc(o.get('truth_label') or 'ground truth')} | "
                 f"each run, on one shared colour scale per row (colour bar){errors}. Pixels without ground truth "
                 "are blank.</p>")
        p.append(f"<p>{_img(base / fig, 'depth maps ' + key)}</p>")
    return "".join(p)


def _runs_html(runs: list[dict], failed: list[dict]) -> str:
    """The failed runs' errors and every run's configuration (collapsed)."""
    p = []
    if failed:
        p.append("<h2>Failed runs</h2><ul>")
        p.extend(f"<li><b>{_esc(r['id'])}</b>: {_esc(r.get('error'))}</li>" for r in failed)
        p.append("</ul>")
    if runs:
        p.append("<h2>Run configurations</h2>")
        for r in runs:
            cfg = yaml.safe_dump(r.get("config") or {}, sort_keys=False, default_flow_style=None)
            extra = f" · {r.get('global_step')} steps · trained {r.get('train_seconds')} s" if r.get("status") == "ok" else ""
            reused = " · reused" if r.get("reused") else ""
            p.append(f"<details><summary><b>{_esc(r['id'])}</b> ({_esc(r.get('status'))}{extra}{reused}) — overrides: "
                     f"<code>{_esc(' '.join(r.get('overrides') or []))}</code></summary><pre>{_esc(cfg)}</pre></details>")
    return "".join(p)


def render_markdown(results: dict) -> str:
    """The tables of the report in Markdown (same numbers and formatting as the HTML)."""
    lines = [f"# {results.get('title') or results.get('name')}", ""]
    if results.get("description"):  # as in the HTML (e.g. a smoke run that goes without pretrained weights)
        lines += [str(results["description"]), ""]
    if results.get("message"):
        lines += [f"> {results['message']}", ""]
    for sec in results.get("sections_before", []) or []:
        lines += _section_md(sec)
    for ev in results.get("evaluations", []):
        if ev.get("status") != "ok":
            lines += [f"## {ev['key']}: skipped ({ev.get('message')})", ""]
            continue
        lines += [f"## {ev.get('title') or ev['key']} ({ev['dataset']} / {ev['split']}, {ev['n_samples']} images)", "",
                  f"Protocol **{ev['protocol']}**: {ev['protocol_description']}", "",
                  _md_table(metric_rows(results, ev["key"]), table_columns(results, ev["key"])), ""]
        if "domain" in table_columns(results, ev["key"]):
            lines += [DOMAIN_NOTE, ""]
        learn = _learning_rows(results) if ev["key"] == "test" else []
        if learn:
            lines += ["### Learning check", "", "AbsRel / RMSE of the same architecture freshly initialised (same "
                      "seed) against the trained run, same test images and protocol.", "",
                      _md_table(learn, ["abs_rel_untrained", "abs_rel", "rmse_untrained", "rmse"], mark_best=False), ""]
        cat_rows = _category_rows(results, ev["key"])
        if cat_rows:
            lines += [f"### Per category ({ev['key']})", "",
                      _md_table(cat_rows, ["abs_rel", "rmse", "delta1", "n_images"], first="run / category",
                                mark_best=False), ""]
    lrows = loss_rows(results)
    if lrows:
        common = _common_label(results)
        lines += ["## Training and test losses", "", "test loss: mean of each run's own objective over the test "
                  "batches" + (f"; common test loss: {common}, the same for every run" if common else ""), "",
                  _md_table(lrows, list(LOSS_COLUMNS), mark_best=False), ""]
    for sec in results.get("sections", []) or []:
        lines += _section_md(sec)
    failed = [r for r in results.get("runs", []) if r.get("status") != "ok"]  # as in the HTML
    if failed:
        lines += ["## Failed runs", "", *(f"- **{r['id']}**: {r.get('error')}" for r in failed), ""]
    return "\n".join(lines) + "\n"


def _section_md(sec: dict) -> list[str]:
    lines = [f"## {sec.get('title', 'section')}", ""]
    if sec.get("message"):
        lines += [sec["message"], ""]
    for t in sec.get("tables") or []:
        if t.get("title"):
            lines += [f"### {t['title']}", ""]
        if t.get("protocol_description"):
            lines += [f"Protocol **{t.get('protocol', '')}**: {t['protocol_description']}", ""]
        if t.get("caption"):  # e.g. a benchmark table's dataset and protocols, as in the HTML
            lines += [str(t["caption"]), ""]
        lines += [_md_table(t["rows"], list(t["columns"]), first=t.get("first", "run"),
                            mark_best=t.get("mark_best", True)), ""]
    return lines


def write_report(results: dict, path, base=None) -> Path:
    """Write the self-contained HTML report (atomically)."""
    from depthlab.io import atomic_write

    path = Path(path)
    text = render_html(results, Path(base) if base is not None else path.parent)
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def write_markdown(results: dict, path) -> Path:
    from depthlab.io import atomic_write

    with atomic_write(Path(path), "w") as f:
        f.write(render_markdown(results))
    return Path(path)
