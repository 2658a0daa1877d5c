"""The typed experiment spec (depthlab.experiment.ExperimentSpec): one-line errors naming the file and the
dotted key, defaults from the dataclasses, results.json's "spec" as the typed spec's plain dict. No training."""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields

import pytest
import yaml

from depthlab.config import ConfigError, check_fields
from depthlab.experiment import (EvalDataset, ExperimentError, ExperimentSpec, ReportSpec, SpeedSpec, expand_grid,
                                 load_spec)
from depthlab.report.spec_figures import FigureSpec


def _error(tmp_path, spec: dict, smoke: bool = False) -> str:
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(spec))
    with pytest.raises(ExperimentError) as info:
        load_spec(f, smoke=smoke)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{f}: ")
    return msg[len(f"{f}: "):]


def test_unknown_nested_key_names_the_dotted_key_with_a_close_match(tmp_path):
    msg = _error(tmp_path, {"evaluation": {"datasets": [{"name": "k", "dataset": "kitti", "protocl": "x"}]}})
    assert msg.startswith("evaluation.datasets[0].protocl: unknown key in 'evaluation.datasets[0]'; "
                          "did you mean: protocol?")
    assert _error(tmp_path, {"speed": {"repeat": 3}}).startswith("speed.repeat: unknown key in 'speed'; "
                                                                 "did you mean: repeats?")
    msg = _error(tmp_path, {"report": {"figures": [{"name": "f", "kind": "curves", "runz": "*"}]}})
    assert msg.startswith("report.figures[0].runz: unknown key in 'report.figures[0]'; did you mean: runs?")
    # the smoke block is checked in the full form too (a typo there must not wait for --smoke)
    msg = _error(tmp_path, {"smoke": {"evaluation": {"limt": 2}}})
    assert msg.startswith("smoke.evaluation.limt: unknown key in 'smoke.evaluation'; did you mean: limit, split?")


def test_wrong_types_and_missing_required_keys(tmp_path):
    assert _error(tmp_path, {"speed": {"repeats": "five"}}) == "speed.repeats: expected int, got str 'five'"
    assert _error(tmp_path, {"threads": [1]}) == "threads: expected int | null, got list [1]"
    assert _error(tmp_path, {"report": {"figures": [{"name": "f", "kind": "curves", "per": "epochs"}]}}) == \
        "report.figures[0].per: 'epochs' is not one of 'epoch', 'step'; did you mean: epoch?"
    assert _error(tmp_path, {"grid": {"model.name": "unet"}}) == \
        "grid.model.name: expected list[any] | dict[str, any], got str 'unet'"
    assert _error(tmp_path, {"runs": [{"set": {"a": 1}}]}) == "runs[0]: missing required key(s) id"
    assert _error(tmp_path, {"benchmark": {"models": ["fastdepth"]}}) == "benchmark: missing required key(s) datasets"
    assert _error(tmp_path, {"report": {"figures": [{"name": "f", "kind": "pie"}]}}).startswith(
        "report.figures[0].kind: 'pie' is not one of 'sweep', 'curves', 'samples'")


def test_defaults_come_from_the_dataclasses():
    spec, _ = load_spec({"runs": [{"id": "a"}], "evaluation": {"datasets": [{"dataset": "kitti"}]}})
    assert spec == ExperimentSpec(name="experiment", runs=spec.runs, evaluation=spec.evaluation)
    assert spec.speed == SpeedSpec() and spec.report == ReportSpec()
    assert spec.evaluation.datasets == [EvalDataset(dataset="kitti")]
    assert spec.evaluation.protocol == EvalDataset().protocol == "none"
    assert expand_grid(spec) == [{"id": "a", "labels": {"run": "a"}, "overrides": [], "base": None, "train": True}]
    assert check_fields(FigureSpec, {"name": "f", "kind": "curves"}).per == "epoch"
    # YAML numbers where a float or str is expected are read losslessly; nested sections stay dataclasses
    spec, _ = load_spec({"runs": [{"id": 1}], "speed": {"size": [8, 8]}})
    assert spec.runs[0].id == "1" and spec.speed.size == [8, 8]


def test_spec_round_trips_through_json():
    spec, _ = load_spec({"name": "x", "report": {"figures": [{"name": "f", "kind": "sweep", "x": "loss.terms.l1"}]},
                         "benchmark": {"models": ["fastdepth", {"name": "m", "label": "m2"}], "datasets": ["nyu"]}})
    data = json.loads(json.dumps(asdict(spec)))  # results.json's "spec"
    assert check_fields(ExperimentSpec, data) == spec


def test_check_fields_is_the_config_checker():
    with pytest.raises(ConfigError, match=r"^s\.warmupp: unknown key in 's'; did you mean: warmup\?"):
        check_fields(SpeedSpec, {"warmupp": 1}, "s")
    with pytest.raises(ConfigError, match=r"^s: expected a mapping, got list"):
        check_fields(SpeedSpec, [1], "s")


def test_spec_defaults_match_the_functions_they_configure():
    """speed:, benchmark: and the report's figure labels are the arguments of measure_latency / run_benchmark /
    depth_rows_figure; their defaults must agree."""
    import inspect

    from depthlab.evaluation.benchmark import run_benchmark
    from depthlab.evaluation.speed import measure_latency
    from depthlab.experiment import BenchmarkSpec
    from depthlab.report.figures import depth_rows_figure

    assert ReportSpec().colormap == inspect.signature(depth_rows_figure).parameters["cmap"].default
    for cls, fn in ((SpeedSpec, measure_latency), (BenchmarkSpec, run_benchmark), (ReportSpec, depth_rows_figure)):
        params = inspect.signature(fn).parameters
        shared = [f for f in fields(cls) if f.name in params and f.default is not MISSING
                  and params[f.name].default is not inspect.Parameter.empty]  # (speed.size: None = data.size)
        assert len(shared) >= 3
        for f in shared:
            assert f.default == params[f.name].default, (cls.__name__, f.name)
