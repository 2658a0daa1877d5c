"""DIODE loss study (004, docs/studies/diode_unet.md): the study spec's weight sweeps, the report figures
it asks for (``report.figures``: sweep, per-epoch curves, samples) and per-epoch curves from the CSV log.
The loss formulas themselves are checked in tests/test_losses.py; the smoke run in tests/test_experiment.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from depthlab.experiment import expand_grid, load_spec, read_curves, run_experiment
from depthlab.report.spec_figures import figure_sections, final_value
from depthlab.training.train import resolve_config

STUDY = Path(__file__).resolve().parents[1] / "configs" / "studies" / "diode_unet.yaml"


def _resolved_runs(smoke: bool = False) -> dict:
    spec, base_dir = load_spec(STUDY, smoke=smoke)
    base = str((base_dir / spec.base).resolve())
    return {r["id"]: resolve_config(base, [*spec.overrides, *r["overrides"]]) for r in expand_grid(spec)}


def test_sweeps_follow_eqs_11_and_12_and_table2_runs_differ_in_one_factor():
    runs = _resolved_runs()
    eq11 = {k: c.loss.terms for k, c in runs.items() if k.startswith("eq11_")}
    eq12 = {k: c.loss.terms for k, c in runs.items() if k.startswith("eq12_")}
    assert len(eq11) == len(eq12) == 7
    for run_id, t in eq11.items():  # w SSIM + (0.9 - w) SILog + 0.45 Edge + 0.05 L1
        w = float(run_id.split("_w")[1])
        assert (t["ssim"], t["eigen_silog"], t["edge"], t["l1"]) == pytest.approx((w, 0.9 - w, 0.45, 0.05))
    for run_id, t in eq12.items():  # (0.9 - w) SSIM + w Edge + 0.05 L1, SILog 0
        w = float(run_id.split("_w")[1])
        assert (t["ssim"], t["edge"], t["eigen_silog"], t["l1"]) == pytest.approx((0.9 - w, w, 0.0, 0.05))
    base, bn, aug = runs["table2"], runs["table2_bn"], runs["table2_aug"]
    assert base.loss.terms == {"ssim": 0.55, "edge": 0.45, "eigen_silog": 0.0, "l1": 0.05}
    assert (base.model.kwargs["batch_norm"], bn.model.kwargs["batch_norm"]) == (False, True)
    assert base.data.train_transforms == [] and bn.data.train_transforms == []
    names = [next(iter(t)) for t in aug.data.train_transforms]
    assert names == ["random_horizontal_flip", "random_vertical_flip", "color_jitter"]
    assert aug.model == base.model and aug.loss == base.loss


def _run(run_id, x, train, val, epochs=2):
    return {"id": run_id, "status": "ok", "run_dir": f"runs/{run_id}", "config": {"loss": {"terms": {"ssim": x}}},
            "curves": {"train_epoch": [[e, train + 1 - e] for e in range(epochs)],
                       "val_epoch": [[e, val + 1 - e] for e in range(epochs)]},
            "test_loss": [1.0, 2.0], "metrics": {"test": {"rmse": 0.5}}}


def test_sweep_and_curves_sections_hold_the_plotted_numbers(tmp_path):
    results = {"runs": [_run("b", 0.6, 3.0, 4.0), _run("a", 0.3, 5.0, 6.0), {"id": "c", "status": "failed"}],
               "report": {"figures": [
                   {"name": "fig1", "kind": "sweep", "runs": "*", "x": "loss.terms.ssim", "xlabel": "w",
                    "y": ["train_loss", "val_loss", "test_loss", "rmse"], "title": "Fig. 1"},
                   {"name": "fig3", "kind": "curves", "runs": ["a"], "title": "Fig. 3"},
                   {"name": "fig9", "kind": "curves", "runs": ["nope"]},
                   {"name": "fig8", "kind": "pie", "runs": "*"}]}}
    fig1, fig3, missing, bad = figure_sections(results, tmp_path, {})
    assert fig1["title"] == "Fig. 1" and (tmp_path / fig1["figures"][0]).is_file()
    # sorted by w; final values are the last epoch's (the curves end at value + 1 - 1)
    assert fig1["tables"][0]["rows"] == [
        {"run": "a", "w": 0.3, "train_loss": 5.0, "val_loss": 6.0, "test_loss": 1.5, "rmse": 0.5},
        {"run": "b", "w": 0.6, "train_loss": 3.0, "val_loss": 4.0, "test_loss": 1.5, "rmse": 0.5}]
    assert fig3["tables"][0]["rows"][:2] == [{"run": "a", "curve": "training", "epoch": 0, "loss": 6.0},
                                             {"run": "a", "curve": "training", "epoch": 1, "loss": 5.0}]
    assert (tmp_path / "figures" / "fig3.png").is_file()
    assert missing["status"] == "failed" and "no finished run matches ['nope']" in missing["message"]
    assert bad["status"] == "failed" and "kind" in bad["message"]
    assert final_value({"curves": {}}, "val_loss") is None


def test_read_curves_per_epoch(tmp_path):
    log = tmp_path / "logs" / "csv"
    log.mkdir(parents=True)
    (log / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss\n"
        "0,0,4.0,\n0,1,2.0,\n0,1,,3.5\n1,2,1.0,\n1,3,0.5,\n1,3,,0.9\n1,3,,0.8\n")
    c = read_curves(tmp_path)
    assert c["train"] == [[0, 4.0], [1, 2.0], [2, 1.0], [3, 0.5]]
    assert c["train_epoch"] == [[0, 3.0], [1, 0.75]]  # mean of each epoch's logged steps
    assert c["val_epoch"] == [[0, 3.5], [1, 0.8]]     # the epoch's last validation


@pytest.mark.slow
def test_smoke_on_diode_files_draws_every_study_figure(tmp_path):
    res = run_experiment(STUDY, out_dir=tmp_path, smoke=True, quiet=True)
    assert res["status"] == "ok" and all(r["status"] == "ok" for r in res["runs"])
    assert res["evaluations"][0]["dataset"] == "diode" and res["evaluations"][0]["protocol"] == "diode:max_depth=10"
    sections = {s["title"].split(":")[0]: s for s in res["sections"]}
    assert set(sections) == {f"Fig. {i}" for i in range(1, 7)}
    for s in sections.values():
        assert s["status"] == "ok", s
        assert (tmp_path / s["figures"][0]).is_file()
    epochs = [row["epoch"] for row in sections["Fig. 3"]["tables"][0]["rows"] if row["curve"] == "validation"]
    assert epochs == [0, 1]
    assert "Fig. 2: combined loss after training against w" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["runs"][0]["curves"]["train_epoch"]
