"""The demo (`make demo` = `depthlab demo`) in its quick form: outputs exist and agree with summary.json."""
from __future__ import annotations

import json
import os

import pytest
from html_cells import TableReader

os.environ.setdefault("DEPTHLAB_NO_PROGRESS", "1")


def test_demo_spec_ships_inside_the_package():
    from depthlab.demo import DEMO_EXPERIMENT
    from depthlab.experiment import expand_grid, load_spec

    spec, _ = load_spec(DEMO_EXPERIMENT)
    assert [r["id"] for r in expand_grid(spec)] == ["unet", "smp_unet_resnet34", "leve"]
    assert spec.config["data"]["dataset"] == "synthetic" and spec.evaluation.untrained is True
    assert "depthlab/assets" in DEMO_EXPERIMENT.as_posix()


@pytest.mark.slow
def test_quick_demo_outputs_agree_with_summary(tmp_path):
    from rich.console import Console

    from depthlab.demo import run_demo

    out = run_demo(tmp_path, console=Console(file=open(os.devnull, "w")), quick=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(out["summary"]))
    for name in ("report.html", "results.json", "results.md", "eval_nyu_eigen.json", "eval_reference_none.json",
                 "figures/fastdepth_nyu.png", "figures/samples_test.png"):
        assert (tmp_path / name).is_file(), name
    # step 1: FastDepth on the real samples, as in the per-protocol JSON files
    assert summary["predicted"] == 5 and summary["failed"] == 0
    for key, protocol in (("nyu_eigen", "nyu_eigen"), ("reference_none", "none")):
        ev = json.loads((tmp_path / f"eval_{key}.json").read_text())
        assert summary["eval"][key]["protocol"] == protocol
        assert summary["eval"][key]["abs_rel"] == ev["summary"]["abs_rel"]
    assert summary["eval"]["nyu_eigen"]["n_images"] == 4 and summary["eval"]["reference_none"]["n_images"] == 1
    # step 2: three models, all finished, numbers in summary == results.json == report
    results = json.loads((tmp_path / "results.json").read_text())
    parser = TableReader()
    parser.feed((tmp_path / "report.html").read_text())
    cells = {(c["data-run"], c["data-col"]): c for c in parser.cells}
    assert set(summary["experiment"]["runs"]) == {"unet", "smp_unet_resnet34", "leve"}
    for run in results["runs"]:
        s = summary["experiment"]["runs"][run["id"]]
        assert run["status"] == "ok" and s["status"] == "ok"
        for col in ("abs_rel", "rmse", "delta1"):
            assert s[col] == run["metrics"]["test"][col]
            assert json.loads(cells[(run["id"], col)]["data-value"]) == s[col]
        assert s["params"] == run["params"] and s["abs_rel_untrained"] == run["untrained"]["abs_rel"]
    # FastDepth's section is in the same report, with its numbers
    assert json.loads(cells[("fastdepth", "abs_rel")]["data-value"]) in (
        summary["eval"]["nyu_eigen"]["abs_rel"], summary["eval"]["reference_none"]["abs_rel"])
    assert summary["report"].endswith("report.html")


def test_cli_demo_prints_report_path_once(tmp_path, monkeypatch):
    """The CLI is thin: it calls run_demo once, which prints the report path (the CLI adds no second copy)."""
    from typer.testing import CliRunner

    import depthlab.demo
    from depthlab.cli import app

    calls = []

    def fake(out, console=None, quick=False, threads=1):
        calls.append(out)
        console.print(f"demo done in 1.0 s; report: {out / 'report.html'}")
        return {"summary": {"report": str(out / "report.html")}}

    monkeypatch.setattr(depthlab.demo, "run_demo", fake)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert calls == [tmp_path / "d"] and result.output.count("report: ") == 1 and "report.html" in result.output
