"""``depthlab experiment``: grid expansion, reuse of finished runs, failed runs, and every study's --smoke form."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from depthlab.experiment import ExperimentError, expand_grid, load_spec, run_experiment
from depthlab.report.html import fmt
from html_cells import TableReader

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "configs" / "studies"

os.environ.setdefault("DEPTHLAB_NO_PROGRESS", "1")

TINY = {
    "name": "tiny",
    "config": {
        "model": {"name": "unet", "kwargs": {"base_channels": 4}},
        "data": {"dataset": "synthetic", "size": [32, 32], "batch_size": 2, "kwargs": {"n": 4}, "limit_val": 2,
                 "train_transforms": [], "val_transforms": []},
        "train": {"max_epochs": -1, "max_steps": 2, "val_check_interval": 2, "log_every_n_steps": 1,
                  "loggers": ["csv"]},
    },
    "grid": {"model.name": ["unet", "no_such_model"]},
    "evaluation": {"protocol": "none", "limit": 3, "batch_size": 2},
    "speed": {"repeats": 1, "warmup": 0},
    "report": {"samples": 1},
    "threads": 1,
}


def html_cells(path: Path) -> dict:
    parser = TableReader()
    parser.feed(Path(path).read_text())
    return {(c["data-run"], c["data-col"]): c for c in parser.cells}


# ---------------------------------------------------------------------------------------- spec / grid
def test_expand_grid_product_presets_and_extra_runs():
    spec = {"grid": {"model.name": ["unet", "leve"],
                     "loss": {"l1": {"loss.terms": {"l1": 1.0}}, "berhu": ["loss.terms={berhu: 1.0}"]}},
            "runs": [{"id": "kd 0.25", "set": {"distill.epsilon": 0.25}, "base": "x.yaml"}]}
    runs = expand_grid(spec)
    assert [r["id"] for r in runs] == ["unet-l1", "unet-berhu", "leve-l1", "leve-berhu", "kd_0.25"]
    assert runs[0]["overrides"] == ['model.name="unet"', 'loss.terms={"l1": 1.0}']
    assert runs[3]["overrides"] == ['model.name="leve"', "loss.terms={berhu: 1.0}"]
    assert runs[3]["labels"] == {"model.name": "leve", "loss": "berhu"}
    assert runs[4]["overrides"] == ["distill.epsilon=0.25"] and runs[4]["base"] == "x.yaml"


def test_expand_grid_errors():
    with pytest.raises(ExperimentError, match="grid.model.name: empty list"):
        expand_grid({"grid": {"model.name": []}})
    with pytest.raises(ExperimentError, match="two runs have the id 'a'"):
        expand_grid({"grid": {"x": ["a"]}, "runs": [{"id": "a"}]})
    with pytest.raises(ExperimentError, match=r"runs\[0\]\.sett: unknown key in 'runs\[0\]'; did you mean: set\?"):
        expand_grid({"runs": [{"id": "a", "sett": {}}]})
    assert expand_grid({"benchmark": {"models": [], "datasets": []}}) == []  # benchmark-only: no training runs


def test_load_spec_smoke_and_errors(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump({"base": "b.yaml", "overrides": ["train.max_epochs=5"], "grid": {"model.name": ["a", "b"]},
                                 "evaluation": {"protocol": "nyu_eigen", "limit": None},
                                 "smoke": {"overrides": ["train.max_steps=2"], "grid": {"model.name": ["a"]},
                                           "evaluation": {"limit": 2}}}))
    spec, base_dir = load_spec(f, smoke=True)
    assert base_dir == tmp_path and spec.name == "exp" and spec.smoke is True
    assert spec.overrides == ["train.max_epochs=5", "train.max_steps=2"]
    assert spec.grid == {"model.name": ["a"]}
    assert (spec.evaluation.protocol, spec.evaluation.limit) == ("nyu_eigen", 2)  # mappings merge
    full, _ = load_spec(f)
    assert full.grid == {"model.name": ["a", "b"]} and full.smoke is False and full.evaluation.limit is None
    with pytest.raises(ExperimentError, match=r"exp2.yaml: gird: unknown key at the top level; did you mean: grid\?"):
        (tmp_path / "exp2.yaml").write_text("gird: {}\n")
        load_spec(tmp_path / "exp2.yaml")
    with pytest.raises(ExperimentError, match="needs a 'smoke:' block"):
        load_spec({"grid": {}}, smoke=True)
    with pytest.raises(ExperimentError, match=r"overrides\[0\] must be a 'key=value' string"):
        load_spec({"overrides": [{"data.kwargs={n": "8}"}]})
    with pytest.raises(ExperimentError, match="missing.yaml: experiment file not found"):
        load_spec(tmp_path / "missing.yaml")


def test_missing_base_config_is_skipped_with_message(tmp_path):
    res = run_experiment({"name": "m", "base": "nowhere.yaml", "grid": {"model.name": ["unet"]}}, out_dir=tmp_path,
                         quiet=True)
    assert res["status"] == "skipped" and res["runs"] == [] and res["planned_runs"] == ["unet"]
    assert "nowhere.yaml: base training config not found" in res["message"]
    assert "nowhere.yaml: base training config not found" in (tmp_path / "report.html").read_text()


# ---------------------------------------------------------------------------------------- reuse / failure
def test_failed_run_is_reported_and_finished_run_is_reused(tmp_path):
    res = run_experiment(TINY, out_dir=tmp_path, quiet=True)
    ok, bad = res["runs"]
    assert ok["id"] == "unet" and ok["status"] == "ok" and ok["reused"] is False
    assert bad["id"] == "no_such_model" and bad["status"] == "failed"
    assert "no_such_model" in bad["error"] and "\n" not in bad["error"]
    # numbers in the report equal results.json
    on_disk = json.loads((tmp_path / "results.json").read_text())
    cells = html_cells(tmp_path / "report.html")
    m = on_disk["runs"][0]["metrics"]["test"]
    assert m["n_images"] == 3
    for col in ("abs_rel", "rmse", "delta1", "n_images"):
        assert json.loads(cells[("unet", col)]["data-value"]) == m[col]
        assert cells[("unet", col)]["text"] == fmt(m[col], col)
    assert json.loads(cells[("unet", "params")]["data-value"]) == on_disk["runs"][0]["params"] > 0
    html = (tmp_path / "report.html").read_text()
    assert "failed: " in html and bad["error"].split(":")[0] in html
    assert (tmp_path / "results.md").read_text().count("| no_such_model | failed:") == 1
    # the run's logs gave curves, the test split a loss per batch (3 images, batch 2 -> 2 batches)
    assert ok["curves"]["train"] and len(ok["test_loss"]) == 2
    assert (tmp_path / res["figures"]["samples"]["test"]).is_file()

    marker = tmp_path / "runs" / "unet" / "experiment_run.json"
    ckpt = tmp_path / "runs" / "unet" / "best.safetensors"
    before = (marker.stat().st_mtime_ns, ckpt.stat().st_mtime_ns)
    again = run_experiment(TINY, out_dir=tmp_path, quiet=True)
    assert again["runs"][0]["reused"] is True and again["runs"][0]["status"] == "ok"
    assert (marker.stat().st_mtime_ns, ckpt.stat().st_mtime_ns) == before  # not retrained
    assert again["runs"][0]["metrics"] == ok["metrics"]
    assert again["runs"][1]["status"] == "failed"  # a failed run is tried again (and fails again)

    # a changed setting invalidates the marker: the run trains again (resuming its last.ckpt)
    changed = run_experiment(TINY, out_dir=tmp_path, quiet=True, overrides=["train.max_steps=3"])
    assert changed["runs"][0]["reused"] is False and changed["runs"][0]["global_step"] == 3

    # any other change (here the learning rate) retrains from scratch: the old weights must not be reported
    # under the new config (2 steps, not 3 continued from the old run)
    relr = run_experiment(TINY, out_dir=tmp_path, quiet=True, overrides=["train.max_steps=2", "optim.lr=0.5"])
    assert relr["runs"][0]["reused"] is False and relr["runs"][0]["global_step"] == 2
    assert relr["runs"][0]["config"]["optim"]["lr"] == 0.5
    assert relr["runs"][0]["metrics"]["test"]["rmse"] != ok["metrics"]["test"]["rmse"]


def test_cli_experiment_exit_code_and_report(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    spec = dict(TINY, grid={"model.name": ["no_such_model"]})
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["experiment", str(f), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "0 run(s) ok, 1 failed" in result.output and "report.html" in result.output
    result = CliRunner().invoke(app, ["experiment", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml: experiment file not found" in result.output


# ---------------------------------------------------------------------------------------- the studies
STUDY_FILES = sorted(p.name for p in STUDIES.glob("*.yaml"))


def test_every_study_is_listed():
    assert set(STUDY_FILES) >= {"aerial.yaml", "nyu_six_models.yaml", "zero_shot.yaml", "leve.yaml", "diode_unet.yaml"}
    for name in STUDY_FILES:  # full forms parse and expand (no training)
        spec, _ = load_spec(STUDIES / name)
        assert expand_grid(spec) or spec.benchmark


@pytest.mark.parametrize("study", STUDY_FILES)
def test_study_smoke(study, tmp_path):
    spec, base_dir = load_spec(STUDIES / study, smoke=True)
    res = run_experiment(STUDIES / study, out_dir=tmp_path, smoke=True, quiet=True)
    assert (tmp_path / "report.html").is_file() and (tmp_path / "results.json").is_file()
    assert res["status"] == "ok", res["message"]  # a missing base training config is a failure, not a skip
    assert len(res["runs"]) == len(expand_grid(spec)) >= 1
    assert res["title"].startswith("Smoke run (tiny data and models, not the study's results): ")
    failed = {r["id"]: r["error"] for r in res["runs"] if r["status"] != "ok"}
    assert not failed
    cells = html_cells(tmp_path / "report.html")
    for r in res["runs"]:
        for key, m in r["metrics"].items():
            assert m["n_images"] >= 1
            assert json.loads(cells[(r["id"], "abs_rel")]["data-value"]) is not None
        assert r["params"] > 0 and r["latency_ms"] > 0
    if spec.benchmark:  # the zero-shot section: every model scored on every (fixture) dataset
        bench = json.loads((tmp_path / "benchmark" / "results.json").read_text())
        assert not bench["skipped_models"] and bench["rows"]
        assert all(r["status"] == "ok" and r["n_images"] >= 1 for r in bench["rows"]), bench["rows"]
        assert {r["in_domain"] for r in bench["rows"]} == {True, False}  # in-domain scores are marked
    # every table and figure the study names (report.figures) is drawn, none left as "not drawn"
    assert not [s["title"] for s in res["sections"] if s.get("status") != "ok"]
    named = [f.title for f in spec.report.figures]
    assert named == [s["title"] for s in res["sections"] if s["title"] in named]


def test_zero_shot_runs_table_marks_in_domain_scores(tmp_path):
    """The experiment's own runs table (not only the benchmark section) says which score is in-domain:
    FastDepth's bundled NYU weights on NYU frames are, the same network from random weights is not."""
    raw = yaml.safe_load((STUDIES / "zero_shot.yaml").read_text())
    nyu = str(REPO / "src/depthlab/assets/samples/nyu")
    spec = {"name": "zero_shot_domains", "config": {**raw["config"], "data": {**raw["config"]["data"], "root": nyu}},
            "runs": raw["smoke"]["runs"][:2], "threads": 1, "speed": {"repeats": 1, "warmup": 0},
            "report": {"samples": 0},
            "evaluation": {"test": False, "datasets": [{**raw["smoke"]["evaluation"]["datasets"][0], "root": nyu,
                                                        "limit": 1}]}}
    assert [r["id"] for r in spec["runs"]] == ["fastdepth_nyu", "fastdepth_random"]
    res = run_experiment(spec, out_dir=tmp_path, quiet=True)
    assert {r["id"]: r["domains"]["nyu_bundled"] for r in res["runs"]} == {
        "fastdepth_nyu": "in-domain", "fastdepth_random": "zero-shot"}
    cells = html_cells(tmp_path / "report.html")
    assert cells[("fastdepth_nyu", "domain")].get("data-value") == '"in-domain"'
    assert "| fastdepth_random | zero-shot |" in (tmp_path / "results.md").read_text()


def test_every_study_run_resolves():
    """The full form of every study: each run's training config resolves (types, keys) and names a registered
    model (the smokes train the reduced grids; the full grids only resolve here)."""
    from depthlab.experiment import run_configs
    from depthlab.models import list_models

    known = set(list_models())
    for name in STUDY_FILES:
        for rid, cfg in run_configs(STUDIES / name).items():
            assert cfg.model.name in known, (name, rid, cfg.model.name)


def test_eval_set_reads_lazily_and_keeps_only_the_figure_samples():
    """A full test split is not held in memory: items are read on access; head(k) keeps k readable ones."""
    from depthlab.experiment import _EvalSet

    reads = []

    class Counting:
        def __len__(self):
            return 1000

        def __getitem__(self, i):
            reads.append(i)
            if i == 1:
                raise ValueError("corrupt.png: cannot decode")
            return {"meta": {"name": str(i)}}

    es = _EvalSet(Counting(), n=500, name="counting", split="test")
    assert len(es) == 500 and reads == []
    assert [s["meta"]["name"] for s in es.head(2)] == ["0", "2"] and reads == [0, 1, 2]
    assert es.failures == {"#1": "ValueError: corrupt.png: cannot decode"}
    es.head(2)
    assert reads == [0, 1, 2]  # cached
    with pytest.raises(IndexError):
        es[500]
