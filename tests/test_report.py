"""The HTML / Markdown report and its figures, on hand-made results (no training: fast)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from depthlab.experiment import read_curves
from depthlab.report.figures import curves_figure, depth_rows_figure, per_batch_loss_figure, shared_range
from depthlab.report.html import fmt, render_html, render_markdown, write_report
from html_cells import TableReader


def _sample(seed: int, h: int = 24, w: int = 32) -> dict:
    g = torch.Generator().manual_seed(seed)
    depth = 1.0 + 4.0 * torch.rand(1, h, w, generator=g)
    depth[:, :3] = 0.0  # missing rows
    return {"image": torch.rand(3, h, w, generator=g), "depth": depth, "mask": depth > 0,
            "meta": {"name": f"s{seed}", "category": "sparse"}}


def make_results(tmp_path: Path, figures: bool = True) -> dict:
    """Two finished runs and a failed one, with the three figures on disk (``figures=True``)."""
    samples = [_sample(0), _sample(1)]
    preds = {"a": [s["depth"][0].numpy() * 1.1 for s in samples], "b": [s["depth"][0].numpy() * 0.8 for s in samples]}
    curves = {"a": {"train": [[0, 2.0], [5, 1.0]], "val": [[5, 1.5]]}, "b": {"train": [[0, 3.0], [5, 2.0]], "val": [[5, 2.5]]}}
    fig, cfig, tfig = (tmp_path / "figures" / n for n in ("samples_test.png", "curves.png", "test_loss.png"))
    if figures:
        depth_rows_figure(samples, preds, fig)
        curves_figure(curves, cfig)
        per_batch_loss_figure({"a": [1.0, 1.2], "b": [2.0, 2.1]}, tfig)

    def run(rid, abs_rel, delta1, latency, cat_abs):
        return {"id": rid, "status": "ok", "error": None, "overrides": [f"model.name={rid}"], "labels": {},
                "config": {"model": {"name": rid}}, "run_dir": f"runs/{rid}", "global_step": 5, "train_seconds": 1.0,
                "metrics": {"test": {"abs_rel": abs_rel, "sq_rel": 0.5, "rmse": 1.0 + abs_rel, "rmse_log": 0.3,
                                     "log10": 0.1, "silog": 20.0, "delta1": delta1, "delta2": 0.9, "delta3": 0.95,
                                     "n_images": 2}},
                "per_category": {"test": {"sparse": {"abs_rel": cat_abs, "rmse": 1.0, "delta1": 0.5, "n_images": 2}}},
                "params": 123456, "latency_ms": latency, "fps": 1000.0 / latency, "curves": curves[rid],
                "test_loss": [1.0], "untrained": {"abs_rel": 0.9, "rmse": 3.0}}

    return {
        "name": "unit", "title": "unit <report>", "smoke": True, "runs": [
            run("a", 0.123456789, 0.61, 12.5, 0.2), run("b", 0.2, 0.75, 8.25, 0.1),
            {"id": "broken", "status": "failed", "error": "KeyError: unknown model 'nope'", "overrides": [],
             "labels": {}, "run_dir": "runs/broken"}],
        "evaluations": [{"key": "test", "status": "ok", "dataset": "synthetic", "split": "test", "n_samples": 2,
                         "protocol": "none", "protocol_description": "crop=none; alignment=none",
                         "protocol_settings": {"name": "none", "crop": "none"}}],
        "figures": {"samples": {"test": str(Path(fig).relative_to(tmp_path))},
                    "curves": str(Path(cfig).relative_to(tmp_path)),
                    "test_loss": str(Path(tfig).relative_to(tmp_path))},
        "sections": [{"title": "extra section", "message": "a note", "status": "ok", "tables": [
            {"id": "extra", "first": "model", "columns": ["abs_rel", "n_images"], "protocol": "nyu_eigen",
             "protocol_description": "eigen crop", "rows": [{"model": "fastdepth", "status": "ok", "abs_rel": 0.14,
                                                             "n_images": 1}]}]}],
    }


def test_fmt_hand_values():
    assert fmt(0.123456789) == "0.1235"
    assert fmt(None) == "-"
    assert fmt(3) == "3"
    assert fmt(24436369, "params") == "24.436 M"
    assert fmt(8.25, "latency_ms") == "8.2"  # round-half-even of the float 8.25
    assert fmt(121.21, "fps") == "121.2"


def test_html_numbers_equal_results_and_best_is_direction_aware(tmp_path):
    results = make_results(tmp_path, figures=False)
    text = render_html(results, tmp_path)
    reader = TableReader()
    reader.feed(text)
    cells = {(c["data-run"], c["data-col"]): c for c in reader.cells
             if c.get("data-run") in ("a", "b") and c["table"] == "metrics-test"}
    learning = {(c["data-run"], c["data-col"]): c["text"] for c in reader.cells if c["table"] == "learning"}
    assert learning[("a", "abs_rel_untrained")] == "0.9000" and learning[("a", "abs_rel")] == "0.1235"
    for rid in ("a", "b"):
        run = next(r for r in results["runs"] if r["id"] == rid)
        for col in ("abs_rel", "rmse", "delta1", "n_images"):
            cell = cells[(rid, col)]
            assert json.loads(cell["data-value"]) == run["metrics"]["test"][col]
            assert cell["text"] == fmt(run["metrics"]["test"][col], col)
        for col in ("params", "latency_ms", "fps"):
            assert json.loads(cells[(rid, col)]["data-value"]) == run[col]
            assert cells[(rid, col)]["text"] == fmt(run[col], col)
    best = {(r, c) for (r, c), cell in cells.items() if "best" in (cell.get("class") or "")}
    assert ("a", "abs_rel") in best and ("b", "abs_rel") not in best      # lower is better
    assert ("b", "delta1") in best and ("a", "delta1") not in best        # higher is better
    assert ("b", "latency_ms") in best and ("b", "fps") in best
    assert not any(c == "n_images" for _, c in best)
    # the failed run is listed with its one-line error, the protocol is printed with the table
    assert "failed: KeyError: unknown model &#x27;nope&#x27;" in text
    assert "protocol: none" in text and "crop=none; alignment=none" in text
    # per-category table and the extra section's table
    assert ("a / sparse", "abs_rel") in {(c["data-run"], c["data-col"]) for c in reader.cells}
    assert ("fastdepth", "abs_rel") in {(c["data-run"], c["data-col"]) for c in reader.cells}
    assert "unit &lt;report&gt;" in text  # escaped title


def test_html_is_self_contained(tmp_path):
    results = make_results(tmp_path)
    path = write_report(results, tmp_path / "report.html", base=tmp_path)
    text = path.read_text()
    reader = TableReader()
    reader.feed(text)
    assert "script" not in reader.tags and "link" not in reader.tags
    assert reader.links == []
    assert "http://" not in text and "https://" not in text
    assert len(reader.images) == 3
    for src in reader.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("<details>") == 3  # resolved config of every run, the failed one too


def test_markdown_has_the_same_numbers(tmp_path):
    md = render_markdown(make_results(tmp_path, figures=False))
    assert "| a | **0.1235** |" in md
    assert "| b | 0.2000 |" in md
    assert "| broken | failed: KeyError: unknown model 'nope' |" in md
    assert "Protocol **none**" in md
    # like the HTML: the learning check (untrained vs trained) and the failed runs with their error
    assert "### Learning check" in md and "| a | 0.9000 | 0.1235 | 3.0000 | 1.1235 |" in md
    assert md.rstrip().endswith("## Failed runs\n\n- **broken**: KeyError: unknown model 'nope'")


def test_shared_range_is_gt_percentiles():
    gt = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    valid = np.ones_like(gt, dtype=bool)
    valid[0, 0] = False  # value 1 excluded
    lo, hi = shared_range(gt, valid)
    vals = np.arange(2, 101, dtype=np.float64)
    assert lo == pytest.approx(np.percentile(vals, 2)) and hi == pytest.approx(np.percentile(vals, 98))
    assert shared_range(gt, np.zeros_like(valid)) == (0.0, 1.0)


def test_read_curves_from_lightning_csv(tmp_path):
    csv_dir = tmp_path / "logs" / "csv"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text("epoch,lr-Adam,step,train/loss,val/loss,val/rmse\n"
                                         "0,,4,2.5,,\n0,0.001,4,,,\n0,,9,1.5,,\n0,,9,,1.75,0.9\n")
    assert read_curves(tmp_path) == {"train": [[4, 2.5], [9, 1.5]], "val": [[9, 1.75]],
                                     "train_epoch": [[0, 2.0]], "val_epoch": [[0, 1.75]]}
    assert read_curves(tmp_path / "nothing") == {"train": [], "val": [], "train_epoch": [], "val_epoch": []}


def test_read_curves_prefers_the_logged_epoch_mean(tmp_path):
    """train/epoch_loss (the epoch's mean over every step, also the unlogged ones) wins over the mean of the
    logged steps; the last validation of each epoch; epochs counted from 0."""
    csv_dir = tmp_path / "logs" / "csv"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text("epoch,step,train/loss,train/epoch_loss,val/loss\n"
                                         "0,0,3.0,,\n0,1,2.0,,\n0,1,,,2.75\n0,1,,2.5,\n"
                                         "1,2,1.0,,\n1,3,,,1.5\n1,3,,1.25,\n1,3,,,1.4\n")
    c = read_curves(tmp_path)
    assert c["train_epoch"] == [[0, 2.5], [1, 1.25]] and c["val_epoch"] == [[0, 2.75], [1, 1.4]]
    assert c["train"] == [[0, 3.0], [1, 2.0], [2, 1.0]]


def test_training_logs_the_epoch_mean_of_its_loss(tmp_path):
    """train/epoch_loss equals the mean of the epoch's per-step train/loss (equal batch sizes)."""
    from depthlab.training import train

    overrides = ["data.dataset=synthetic", "data.size=[32,32]", "data.batch_size=2", "data.kwargs={n: 4}",
                 "data.val_split=null", "data.num_workers=0", "train.max_epochs=2", "train.loggers=[csv]",
                 "train.log_every_n_steps=1", f"output_dir={tmp_path}", "name=r", "model.name=unet",
                 "model.kwargs={base_channels: 4}"]
    r = train({}, overrides)
    c = read_curves(r.run_dir)
    steps = dict((int(s), v) for s, v in c["train"])
    assert len(c["train_epoch"]) == 2 and len(steps) == 4
    assert c["train_epoch"][0][1] == pytest.approx((steps[0] + steps[1]) / 2, rel=1e-5)
    assert c["train_epoch"][1][1] == pytest.approx((steps[2] + steps[3]) / 2, rel=1e-5)


def test_depth_rows_figure_writes_png(tmp_path):
    s = _sample(3)
    out = depth_rows_figure([s], {"x": [s["depth"][0].numpy()[::2, ::2]]}, tmp_path / "f.png", cmap="viridis")
    data = Path(out).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_depth_figures_show_near_warm_like_predict(tmp_path):
    """Report figures colour depth as `depthlab predict` does (Spectral_r named, near = red, far = blue)."""
    from PIL import Image

    gt = np.full((1, 32, 64), 5.0, np.float32)
    gt[..., :32] = 1.0  # near on the left half
    sample = {"image": np.full((3, 32, 64), 0.5, np.float32), "depth": gt, "mask": gt > 0, "meta": {"name": "lr"}}
    path = depth_rows_figure([sample], {"run": [gt[0]]}, tmp_path / "f.png")
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r > 150) & (b < 100) & (g < 120)
    blue = (b > 150) & (r < 100)
    cols = np.arange(rgb.shape[1])[None, :].repeat(rgb.shape[0], 0)
    assert red.sum() > 200 and blue.sum() > 200
    assert cols[red].mean() < cols[blue].mean()  # red (near) left of blue (far) in the depth panels


def test_curves_figure_has_no_empty_validation_panel(tmp_path):
    """A study without a validation split (NYU six models: val_split null) gets the training panel only."""
    from PIL import Image

    both = curves_figure({"a": {"train": [[0, 2.0], [1, 1.0]], "val": [[1, 1.5]]}}, tmp_path / "both.png")
    train_only = curves_figure({"a": {"train": [[0, 2.0], [1, 1.0]], "val": []}}, tmp_path / "train.png")
    w_both, w_train = Image.open(both).size[0], Image.open(train_only).size[0]
    assert w_train < 0.6 * w_both  # one panel instead of two


def test_spec_table_keeps_the_listed_rows_and_the_protocol(tmp_path):
    """report.figures kind: table (a study's numbered ablation table): only the listed runs, in the listed order,
    with the evaluation's protocol printed beside the numbers in HTML and Markdown; a listed run the experiment
    did not finish is named under the section."""
    from depthlab.report.spec_figures import figure_sections

    results = make_results(tmp_path, figures=False)
    results["sections"] = []
    results["report"] = {"figures": [{"name": "t91", "kind": "table", "runs": ["b", "a", "lcb_3x3"],
                                      "title": "Table 9.1: encoders"}]}
    (sec,) = figure_sections(results, tmp_path, {})
    assert sec["status"] == "ok" and sec["title"] == "Table 9.1: encoders"
    assert [r["run"] for r in sec["tables"][0]["rows"]] == ["b", "a"]
    assert sec["message"] == "Not in this experiment (no finished run): lcb_3x3."
    results["sections"] = [sec]
    md = render_markdown(results)
    table_md = md[md.index("## Table 9.1: encoders"):]
    assert "Protocol **none**: crop=none; alignment=none" in table_md
    assert table_md.index("| b |") < table_md.index("| a |")
    html_text = render_html(results, tmp_path)
    assert html_text.count("protocol: none</b> — crop=none; alignment=none") == 2  # the test table and Table 9.1


def test_a_lone_value_is_not_marked_best(tmp_path):
    """With one run there is nothing to compare: no bold cell (Markdown), no best class (HTML)."""
    results = make_results(tmp_path, figures=False)
    results["runs"] = results["runs"][:1]
    md = render_markdown(results)
    assert "| a | 0.1235 |" in md and "**0.1235**" not in md
    assert "| fastdepth | 0.1400 |" in md  # the one-row extra table too
    reader = TableReader()
    reader.feed(render_html(results, base=tmp_path))
    assert not [c for c in reader.cells if c.get("class") == "best"]
