"""Config: YAML -> typed dataclasses, dotted overrides, one-line errors, inheritance, round trip."""
from __future__ import annotations

import dataclasses
import textwrap

import pytest

from depthlab.config import (
    ConfigError, DataConfig, ExperimentConfig, LossConfig, apply_overrides, config_diff, config_to_dict,
    load_config, save_config,
)


def write(path, text):
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def one_line_error(fn, *args) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_defaults_are_a_small_cpu_run():
    cfg = load_config()
    assert cfg == ExperimentConfig()
    assert cfg.data.dataset == "synthetic" and cfg.data.size == [128, 128] and cfg.data.num_workers == 0
    assert cfg.train.max_epochs == 1 and cfg.train.precision == "32-true" and cfg.train.loggers == ["csv", "tensorboard"]
    assert cfg.optim.name == "adam" and cfg.optim.lr == 1e-4 and cfg.distill.teacher is None
    # mutable defaults are not shared between instances
    a, b = DataConfig(), DataConfig()
    a.size.append(3)
    assert b.size == [128, 128]


def test_yaml_to_dataclass_values_and_types(tmp_path):
    p = write(tmp_path / "exp.yaml", """
        name: nyu_unet
        model: {name: unet_resnet34, kwargs: {decoder_channels: [64, 32]}, pretrained: true}
        data:
          dataset: nyu
          root: /data/nyu
          size: [240, 320]
          batch_size: 4
          max_depth: 10        # int in YAML, float field
          kwargs: {n: 16}
          limit_train: 100
        loss:
          terms: {silog: 1.0, ssim: 0.5}
          params: {ssim: {window_size: 7}}
        optim: {name: adamw, lr: 1e-4, scheduler: cosine, weight_decay: 0.01}   # 1e-4 is a str in YAML 1.1
        train: {max_epochs: 5, gradient_clip_val: 1, val_check_interval: 0.5, devices: auto}
        distill: {teacher: depth_anything_v2_small, epsilon: 0.1}
    """)
    cfg = load_config(p)
    assert cfg.name == "nyu_unet"
    assert cfg.model.kwargs == {"decoder_channels": [64, 32]} and cfg.model.pretrained is True
    assert cfg.data.size == [240, 320] and cfg.data.root == "/data/nyu" and cfg.data.kwargs == {"n": 16}
    assert cfg.data.max_depth == 10.0 and isinstance(cfg.data.max_depth, float)
    assert cfg.data.limit_train == 100 and cfg.data.limit_val is None
    assert cfg.loss == LossConfig(terms={"silog": 1.0, "ssim": 0.5}, params={"ssim": {"window_size": 7}})
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.scheduler == "cosine" and cfg.optim.name == "adamw"
    assert cfg.train.gradient_clip_val == 1.0 and isinstance(cfg.train.gradient_clip_val, float)
    assert cfg.train.val_check_interval == 0.5 and cfg.train.devices == "auto"
    assert cfg.train.seed == 0  # untouched defaults survive
    assert cfg.distill.teacher == "depth_anything_v2_small" and cfg.distill.epsilon == 0.1


def test_config_diff_names_the_changed_dotted_keys():
    base = ExperimentConfig()
    changed = apply_overrides(base, ["optim.lr=0.5", "train.max_steps=7"])
    assert config_diff(base, changed) == {"optim.lr", "train.max_steps"}
    assert config_diff(base, ExperimentConfig()) == set()
    # nested dicts; a key on one side only counts as changed; a dataclass compares with its dict form
    assert config_diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}, "d": 3}) == {"a.c", "d"}
    assert config_diff(config_to_dict(base), changed) == {"optim.lr", "train.max_steps"}


def test_overrides_nested_lists_bools_none():
    cfg = load_config({"model": {"kwargs": {"batch_norm": True}}, "loss": {"terms": {"silog": 1.0}}})
    out = apply_overrides(cfg, [
        "optim.lr=5e-5", "data.size=[64,96]", "model.kwargs.batch_norm=false", "model.kwargs.new.depth=3",
        "loss.terms.l1=0.1", "loss.params.huber.delta=0.5", "data.root=null", "train.gradient_clip_val=2",
        "train.val_check_interval=100", "data.size.0=32", "name=2024", "data.train_transforms=[]",
        "optim.scheduler=step", "train.devices=[0, 1]",
    ])
    assert out.optim.lr == 5e-5
    assert out.data.size == [32, 96]
    assert out.model.kwargs == {"batch_norm": False, "new": {"depth": 3}}
    assert out.loss.terms == {"silog": 1.0, "l1": 0.1}
    assert out.loss.params == {"huber": {"delta": 0.5}}
    assert out.data.root is None
    assert out.train.gradient_clip_val == 2.0 and isinstance(out.train.gradient_clip_val, float)
    assert out.train.val_check_interval == 100 and isinstance(out.train.val_check_interval, int)
    assert out.name == "2024" and out.data.train_transforms == []
    assert out.optim.scheduler == "step" and out.train.devices == [0, 1]
    # text fields keep the text as typed; a union keeps a value that already fits one of its members
    typed = apply_overrides(cfg, ["name=yes", "data.root=0x1F", "train.devices=2", "train.precision=16"])
    assert (typed.name, typed.data.root, typed.train.devices, typed.train.precision) == ("yes", "0x1F", 2, "16")
    # the input config is not modified
    assert cfg.optim.lr == 1e-4 and cfg.model.kwargs == {"batch_norm": True}
    # a mapping merges into a section; null resets an optional field
    out2 = apply_overrides(out, ["model={name: fastdepth}", "optim.scheduler=null"])
    assert out2.model.name == "fastdepth" and out2.model.kwargs == out.model.kwargs
    assert out2.optim.scheduler is None


def test_overrides_on_list_form_loss_terms():
    cfg = load_config({"loss": {"terms": [{"name": "l1", "weight": 0.1}, {"name": "ssim", "params": {"window_size": 7}}]}})
    out = apply_overrides(cfg, ["loss.terms.l1=0.5", "loss.terms.ssim.params.window_size=11", "loss.terms.gradient=1"])
    assert out.loss.terms == [{"name": "l1", "weight": 0.5}, {"name": "ssim", "params": {"window_size": 11}},
                              {"name": "gradient", "weight": 1}]


def test_loss_config_builds_the_weighted_sum():
    from depthlab.losses import build_loss

    cfg = load_config(None, ["loss.terms={silog: 1.0, ssim: 0.5, edge: 0.1, l1: 0.1}", "loss.params.ssim.window_size=7"])
    loss = build_loss(cfg.loss)
    assert loss.keys == ["silog", "ssim", "edge", "l1"] and loss.weights == [1.0, 0.5, 0.1, 0.1]
    assert loss.losses[1].window_size == 7 and loss.losses[1].data_range is None


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1e-3", ["optim.lrr", "unknown key", "did you mean: lr", "valid keys: name, lr"]),
    ("train.lr=5e-5", ["train.lr", "did you mean: optim.lr"]),
    ("data.batch_size=abc", ["data.batch_size", "expected int", "'abc'"]),
    ("data.batch_size=2.5", ["data.batch_size", "expected int"]),
    ("optim.lr=fast", ["optim.lr", "expected float"]),
    ("train.deterministic=maybe", ["train.deterministic", "expected bool"]),
    ("optim.scheduler=cosin", ["optim.scheduler", "did you mean: cosine?"]),
    ("data.size=[1,2,3]", ["data.size", "[H, W]"]),
    ("data.size=[a,b]", ["data.size[0]", "expected int"]),
    ("train.seed.x=1", ["train.seed", "not a section"]),
    ("loss.terms.silg=1", ["loss.terms.silg", "did you mean: silog"]),
    ("loss.terms.l1=heavy", ["loss.terms.l1", "expected float"]),
    ("data.batch_size=0", ["data.batch_size", ">= 1"]),
    ("modle.name=x", ["modle", "did you mean: model"]),
    ("optim.lr", ["expected key=value"]),
    ("optim.lr=.inf", ["optim.lr", "must be a finite number, got inf"]),
    ("optim.lr=.nan", ["optim.lr", "finite"]),
    ("data.max_depth=.inf", ["data.max_depth", "finite"]),
    ("optim.step_size=0", ["optim.step_size", ">= 1"]),
    ("optim.encoder_lr=-1", ["optim.encoder_lr", ">= 0"]),
    ("distill.teacher_input_size=0", ["distill.teacher_input_size", "positive"]),
    ("distill.teacher_input_size=[64,-5]", ["distill.teacher_input_size", "positive"]),
    ("data.size.7=1", ["data.size", "index 7 out of range"]),
    ("data.train_transforms.color_jitter=1", ["data.train_transforms", "integer index"]),
])
def test_bad_overrides_are_one_line_errors_naming_the_key(override, words):
    msg = one_line_error(apply_overrides, ExperimentConfig(), [override])
    for w in words:
        assert w in msg, (w, msg)


def test_bad_yaml_keys_and_types_name_the_key(tmp_path):
    p = write(tmp_path / "bad.yaml", "data:\n  batchsize: 4\n")
    msg = one_line_error(load_config, p)
    assert "data.batchsize" in msg and "did you mean: batch_size" in msg and "bad.yaml" in msg
    p = write(tmp_path / "bad2.yaml", "train:\n  max_epochs: many\n")
    msg = one_line_error(load_config, p)
    assert "train.max_epochs" in msg and "expected int" in msg
    p = write(tmp_path / "bad3.yaml", "train: [1, 2\n")
    assert "invalid YAML" in one_line_error(load_config, p)
    assert "not found" in one_line_error(load_config, tmp_path / "missing.yaml")


def test_a_config_built_in_python_is_type_checked_too():
    from depthlab.config import TrainConfig

    cfg = ExperimentConfig(train=TrainConfig(log_every_n_steps=None))
    msg = one_line_error(load_config, cfg)
    assert "train.log_every_n_steps" in msg and "expected int" in msg
    cfg.train.log_every_n_steps = 5.0  # converted where nothing is lost, and copied
    assert load_config(cfg).train.log_every_n_steps == 5 and load_config(cfg) is not cfg


def _alias_bomb(indent: str) -> str:
    """YAML lines whose aliases expand to 10**9 values (a "billion laughs"), indented by ``indent``."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "".join(f"{indent}{line}\n" for line in lines)


def test_yaml_alias_bombs_are_refused(tmp_path):
    from depthlab.experiment import ExperimentError, load_spec

    msg = one_line_error(load_config, write(tmp_path / "bomb.yaml", "model:\n  kwargs:\n" + _alias_bomb("    ")))
    assert "bomb.yaml" in msg and "invalid YAML" in msg and "alias bomb" in msg
    # an experiment spec (whose inline config reaches model.kwargs too) is read the same way
    spec = write(tmp_path / "spec.yaml", "config:\n  model:\n    kwargs:\n" + _alias_bomb("      "))
    with pytest.raises(ExperimentError, match="spec.yaml: invalid YAML .*alias bomb"):
        load_spec(spec)
    # a few aliases are still fine
    p = write(tmp_path / "ok.yaml", "model:\n  kwargs: {a: &s [1, 2], b: *s}\n")
    assert load_config(p).model.kwargs == {"a": [1, 2], "b": [1, 2]}


def test_base_inheritance(tmp_path):
    (tmp_path / "common").mkdir()
    write(tmp_path / "common" / "base.yaml", """
        name: base
        data: {dataset: nyu, size: [240, 320], kwargs: {a: 1}}
        loss: {terms: {silog: 1.0, ssim: 0.5}}
        optim: {lr: 1e-4}
    """)
    p = write(tmp_path / "child.yaml", """
        base: common/base.yaml
        name: child
        data: {size: [120, 160], kwargs: {b: 2}}
        loss: {terms: {ssim: 0, l1: 0.1}}
    """)
    cfg = load_config(p, ["optim.lr=3e-4"])
    assert cfg.name == "child"
    assert cfg.data.dataset == "nyu" and cfg.data.size == [120, 160]  # lists are replaced
    assert cfg.data.kwargs == {"a": 1, "b": 2}  # mappings merge
    assert cfg.loss.terms == {"silog": 1.0, "ssim": 0.0, "l1": 0.1}  # weight 0 switches a term off
    assert cfg.optim.lr == 3e-4
    # cycles are reported, not recursed forever
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    assert "circular base" in one_line_error(load_config, tmp_path / "a.yaml")


def test_round_trip(tmp_path):
    cfg = load_config(None, [
        "name=rt", "optim.lr=5e-5", "optim.scheduler=poly", "data.size=[64,80]", "model.kwargs.batch_norm=false",
        "loss.terms={silog: 1.0, ssim: 0.5}", "loss.params.ssim={window_size: 7, data_range: 10}",
        "train.val_check_interval=0.25", "data.root=/tmp/some dir", "distill.teacher_kwargs.size=small",
    ])
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert path.exists() and not list(path.parent.glob(".*tmp"))  # atomic: no temp file left behind
    again = load_config(path)
    assert again == cfg
    assert config_to_dict(again) == dataclasses.asdict(cfg)
    assert isinstance(config_to_dict(cfg)["data"]["size"], list)
