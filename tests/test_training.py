"""Training: learning on synthetic scenes, the CLI run directory, targets, optimiser groups, schedules."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn
import yaml

from depthlab.types import decode_target, encode_target


def _config(out: Path, name: str = "run", **sections) -> dict:
    cfg = {
        "name": name, "output_dir": str(out),
        "model": {"name": "unet", "kwargs": {"base_channels": 4}},
        "data": {"dataset": "synthetic", "size": [32, 32], "batch_size": 4, "kwargs": {"n": 8},
                 "train_transforms": ["random_horizontal_flip"], "val_transforms": [], "limit_val": 4},
        "loss": {"terms": {"l1": 1.0}},
        "optim": {"lr": 1e-3},
        "train": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "loggers": ["csv"], "seed": 0},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def _val_abs_rel(model: nn.Module, data_cfg, seed: int = 0) -> float:
    """Mean per-image AbsRel of ``model`` on the validation split, computed outside the task."""
    from depthlab.metrics import compute_metrics
    from depthlab.training.datamodule import DepthDataModule

    dm = DepthDataModule(data_cfg, seed=seed)
    dm.setup("validate")
    info = model.depth_info
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    model.eval()
    values = []
    with torch.inference_mode():
        for batch in dm.val_dataloader():
            raw = model((batch["image"] - mean) / std)["depth"]
            pred = decode_target(raw, info.target_encoding, info.max_depth)
            values.append(compute_metrics(pred, batch["depth"], batch["mask"])["abs_rel"])
    return float(torch.cat(values).mean())


# --------------------------------------------------------------------------- learning (issue acceptance)
def _learning_run(tmp_path: Path, size: int, steps: int, n_train: int) -> tuple[float, float, object, object]:
    from depthlab.checkpoint import load_checkpoint
    from depthlab.config import load_config
    from depthlab.training import DepthTask, train

    cfg = _config(tmp_path, "learn",
                  model={"kwargs": {"base_channels": 8}},
                  data={"size": [size, size], "batch_size": 8, "kwargs": {"n": n_train}, "limit_val": 32,
                        "train_transforms": ["random_horizontal_flip"]},
                  optim={"name": "adam", "lr": 5e-3, "scheduler": "cosine", "min_lr": 1e-4},
                  train={"max_epochs": -1, "max_steps": steps, "val_check_interval": steps, "seed": 0,
                         "log_every_n_steps": 20})
    resolved = load_config(cfg)
    L.seed_everything(0)
    before = _val_abs_rel(DepthTask(resolved).model, resolved.data)
    result = train(cfg)
    model = load_checkpoint(result.best_checkpoint)
    after = _val_abs_rel(model, resolved.data)
    return before, after, result, model


def test_training_halves_validation_abs_rel_on_synthetic_scenes(tmp_path):
    """200 steps of a small U-Net at 64x64 on synthetic scenes: val AbsRel drops by at least 50 %."""
    before, after, result, model = _learning_run(tmp_path, size=64, steps=200, n_train=128)
    assert math.isfinite(before) and before > 0.5, before
    assert after <= 0.5 * before, f"AbsRel {before:.3f} -> {after:.3f}"
    # the metric logged by the task is the one recomputed from the exported checkpoint
    assert result.metrics["abs_rel"] == pytest.approx(after, rel=1e-4)
    assert result.metrics["step"] == 200
    assert model.model_name == "unet" and model.model_args == {"base_channels": 8}


@pytest.mark.slow
def test_training_at_128px_for_400_steps_improves_abs_rel_by_60_percent(tmp_path):
    before, after, _, _ = _learning_run(tmp_path, size=128, steps=400, n_train=256)
    assert after <= 0.4 * before, f"AbsRel {before:.3f} -> {after:.3f}"


# --------------------------------------------------------------------------- CLI smoke run
def test_cli_train_writes_run_directory_and_checkpoints_rebuild_the_model(tmp_path):
    from typer.testing import CliRunner

    from depthlab.checkpoint import load_checkpoint, read_checkpoint
    from depthlab.cli import app

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(_config(tmp_path / "runs", "smoke")))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(cfg_file), "train.max_steps=2", "optim.lr=2e-3", "train.log_every_n_steps=1",
                              "train.loggers=[csv,tensorboard]",
                              "train.checkpoint_every_n_steps=1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    run = tmp_path / "runs" / "smoke"
    assert "run directory" in res.output and str(run) in res.output.replace("\n", "")

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 2e-3 and saved["train"]["max_steps"] == 2
    commit = (run / "git_commit.txt").read_text().strip()
    assert commit == "unknown" or (len(commit) == 40 and all(c in "0123456789abcdef" for c in commit))
    metrics_csv = (run / "logs" / "csv" / "metrics.csv").read_text()
    assert "train/loss" in metrics_csv and "val/rmse" in metrics_csv and "val/abs_rel" in metrics_csv
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "best.safetensors", "last.safetensors"):
        assert (run / name).is_file(), name

    model = load_checkpoint(run / "best.safetensors")
    assert model.model_name == "unet" and model.model_args == {"base_channels": 4}
    state, meta = read_checkpoint(run / "best.safetensors")
    assert meta["config"]["name"] == "smoke" and meta["config"]["optim"]["lr"] == 2e-3
    assert math.isfinite(meta["metrics"]["rmse"]) and meta["metrics"]["step"] == 2 and meta["global_step"] == 2
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert "optimizer_states" not in ckpt and "optimizer_states" in torch.load(  # best: weights only
        run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"]["model." + key]), key
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 32, 32))["depth"]
    assert out.shape == (1, 1, 32, 32) and torch.isfinite(out).all()
    from depthlab.training import DepthTask

    task = DepthTask.load_from_checkpoint(run / "checkpoints" / "best.ckpt")  # config travels in the hparams
    assert task.cfg.name == "smoke" and torch.equal(task.model.head.weight, model.head.weight)

    # a config mistake is a one-line error naming the key
    bad = runner.invoke(app, ["train", str(cfg_file), "train.lr=1e-3"])
    assert bad.exit_code == 2 and "optim.lr" in bad.output

    # a second fresh start refuses to clobber the run; --resume of a finished run is a no-op
    again = runner.invoke(app, ["train", str(cfg_file), "train.max_steps=2"])
    assert again.exit_code == 2 and "--resume" in again.output
    before, before_meta = read_checkpoint(run / "last.safetensors")
    resumed = runner.invoke(app, ["train", str(cfg_file), "train.max_steps=2", "optim.lr=2e-3",
                                  "train.checkpoint_every_n_steps=1", "--resume"])
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    after, after_meta = read_checkpoint(run / "last.safetensors")
    assert after_meta["global_step"] == before_meta["global_step"] == 2  # no further step was taken
    assert all(torch.equal(after[k], v) for k, v in before.items())


# --------------------------------------------------------------------------- targets
class _Oracle(nn.Module):
    """Returns whatever tensor it was given last (``.next``); one parameter for the optimiser."""

    def __init__(self, encoding: str, max_depth: float = 10.0):
        super().__init__()
        from depthlab.models.registry import WeightsInfo

        self.w = nn.Parameter(torch.zeros(()))
        self.depth_info = WeightsInfo(target_encoding=encoding, max_depth=max_depth)
        self.model_name = "oracle"
        self.next = None

    def forward(self, x):
        return {"depth": self.next + 0 * self.w}


def _batch(depth: torch.Tensor) -> dict:
    return {"image": torch.rand(depth.shape[0], 3, *depth.shape[-2:]), "depth": depth,
            "mask": depth > 0, "meta": [{}] * depth.shape[0]}


@pytest.mark.parametrize("encoding", ["depth", "inverse", "normalized"])
def test_target_is_encoded_for_the_loss_and_decoded_for_the_metrics(encoding):
    from depthlab.config import load_config
    from depthlab.training import DepthTask

    cfg = load_config(_config(Path("unused"), data={"target_encoding": encoding, "max_depth": 10.0}))
    oracle = _Oracle(encoding)
    task = DepthTask(cfg, model=oracle)
    depth = torch.rand(2, 1, 8, 8) * 8 + 1
    depth[0, 0, 0, 0] = 0  # a missing pixel
    batch = _batch(depth)
    oracle.next = encode_target(depth, encoding, 10.0)
    loss, terms = task.compute_loss(task(batch["image"]), batch)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6) and set(terms) == {"l1"}
    task.validation_step(batch, 0)
    metrics = task.val_metrics.compute()
    assert float(metrics["abs_rel"]) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics["delta1"]) == pytest.approx(1.0) and int(metrics["n_images"]) == 2
    if encoding != "depth":  # feeding metres where the encoding is expected is caught by the metrics
        task.on_validation_epoch_start()
        oracle.next = depth.clone()
        task.validation_step(batch, 0)
        assert float(task.val_metrics.compute()["abs_rel"]) > 0.1


def test_target_encoding_mismatch_is_a_clear_error():
    from depthlab.config import load_config
    from depthlab.training import DepthTask

    cfg = load_config(_config(Path("unused"), data={"target_encoding": "inverse"}))
    with pytest.raises(ValueError, match=r"data.target_encoding='inverse' but model 'unet' outputs 'depth'"):
        DepthTask(cfg)
    # declaring the model's raw output as inverse depth makes the pair consistent
    cfg = load_config(_config(Path("unused"), data={"target_encoding": "inverse", "max_depth": 8.0},
                              model={"kwargs": {"base_channels": 4, "depth_info": {"target_encoding": "inverse"}}}))
    task = DepthTask(cfg)
    assert task.target_encoding == "inverse" and task.max_depth == 8.0
    assert task.model.depth_info.max_depth == 8.0  # exported checkpoints decode as trained


def test_validation_applies_the_protocol_caps_and_skips_a_crop_that_does_not_fit():
    from depthlab.config import load_config
    from depthlab.training import DepthTask

    task = DepthTask(load_config(_config(Path("unused"), train={"protocol": "endoslam"})))  # 0 < gt < 1 m
    depth = torch.tensor([0.5, 0.99, 1.0, 3.0, 0.0]).view(1, 1, 1, 5)
    final, valid = task._scored(torch.full_like(depth, 5.0), depth, depth > 0)
    assert valid.flatten().tolist() == [True, True, False, False, False]
    assert final.max() == 1.0  # clipped

    task = DepthTask(load_config(_config(Path("unused"), train={"protocol": "nyu_eigen"})))  # 480x640 crop
    depth = torch.full((1, 1, 32, 32), 4.0)
    depth[..., 0, 0] = 20.0
    with pytest.warns(UserWarning, match="crop not applied"):
        _, m = task._scored(depth, depth, depth > 0)
    assert int(m.sum()) == 32 * 32 - 1


def test_validation_loss_is_weighted_by_batch_size_and_keeps_nan():
    from depthlab.config import load_config
    from depthlab.training import DepthTask

    task = DepthTask(load_config(_config(Path("unused"), loss={"terms": {"l1": 1.0, "silog": 0.5}})))
    val = task.val_loss
    assert val.names == ["loss", "loss_l1", "loss_silog"]
    val.update({"loss": torch.tensor(1.0), "loss_l1": torch.tensor(2.0), "loss_silog": torch.tensor(0.0)}, 3)
    val.update({"loss": torch.tensor(5.0), "loss_l1": torch.tensor(4.0), "loss_silog": torch.tensor(1.0)}, 1)
    out = val.compute()  # (3 * 1 + 1 * 5) / 4 = 2, (3 * 2 + 4) / 4 = 2.5, 1 / 4
    assert [float(out[k]) for k in ("loss", "loss_l1", "loss_silog", "n")] == [2.0, 2.5, 0.25, 4.0]
    val.update({"loss": torch.tensor(float("nan")), "loss_l1": torch.tensor(0.0), "loss_silog": torch.tensor(0.0)}, 2)
    assert math.isnan(float(val.compute()["loss"]))  # a diverged batch shows, it is not dropped


def test_validation_sums_are_float32_on_mps_only():
    from types import SimpleNamespace

    from depthlab.config import load_config
    from depthlab.training import DepthTask

    for device, dtype in (("cpu", torch.float64), ("mps", torch.float32)):  # MPS has no float64
        task = DepthTask(load_config(_config(Path("unused"))))
        task._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        task.setup("fit")
        assert task.val_metrics.pooled.dtype == task.val_loss.sums.dtype == dtype, device
    depth = torch.rand(2, 1, 8, 8) + 1
    task.validation_step(_batch(depth), 0)  # float32 sums still score
    assert int(task.val_metrics.compute()["n_images"]) == 2 and task.val_loss.sums.dtype == torch.float32


def test_validation_refuses_what_evaluation_refuses_and_aligns_like_it():
    """A relative model under an alignment-free protocol is refused (as ``depthlab eval`` does); under
    ``marigold`` (least-squares scale and shift on depth) a prediction 2 * gt + 1 scores perfectly."""
    from depthlab.config import load_config
    from depthlab.models.registry import WeightsInfo
    from depthlab.training import DepthTask

    oracle = _Oracle("depth")
    oracle.depth_info = WeightsInfo(output_kind="relative", target_encoding="depth", max_depth=10.0)
    depth = torch.rand(2, 1, 8, 8) * 8 + 1
    oracle.next = 2 * depth + 1
    task = DepthTask(load_config(_config(Path("unused"), data={"max_depth": 10.0})), model=oracle)
    with pytest.raises(ValueError, match=r"relative \(affine-invariant\), but protocol 'none' has alignment=none"):
        task.validation_step(_batch(depth), 0)
    task = DepthTask(load_config(_config(Path("unused"), data={"max_depth": 10.0}, train={"protocol": "marigold"})),
                     model=oracle)
    task.validation_step(_batch(depth), 0)
    assert float(task.val_metrics.compute()["abs_rel"]) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- optimiser and schedules
def _fastdepth_cfg(**optim) -> dict:
    return _config(Path("unused"), model={"name": "fastdepth", "kwargs": {}},
                   optim={"lr": 1e-3, "encoder_lr": 1e-4, **optim})


def test_encoder_parameters_get_encoder_lr():
    from depthlab.config import load_config
    from depthlab.training import DepthTask

    task = DepthTask(load_config(_fastdepth_cfg()))
    groups = {g["name"]: g for g in task.configure_optimizers().param_groups}
    assert groups["encoder"]["lr"] == 1e-4 and groups["decoder"]["lr"] == 1e-3
    names = {id(p): n for n, p in task.model.named_parameters()}
    assert all(names[id(p)].startswith("encoder.") for p in groups["encoder"]["params"])
    assert not any(names[id(p)].startswith("encoder.") for p in groups["decoder"]["params"])
    assert len(groups["encoder"]["params"]) + len(groups["decoder"]["params"]) == len(names)


def test_leve_step_schedule_cosine_and_poly():
    from depthlab.config import load_config
    from depthlab.training import DepthTask

    leve = DepthTask(load_config(_config(Path("unused"), optim={"lr": 1e-4, "scheduler": "step", "step_size": 5,
                                                                "gamma": 0.99})))
    out = leve.configure_optimizers()
    sched = out["lr_scheduler"]
    assert sched["interval"] == "epoch"
    lrs = []
    for _ in range(11):
        lrs.append(out["optimizer"].param_groups[0]["lr"])
        out["optimizer"].step()  # no gradients: a no-op that keeps torch's call-order check quiet
        sched["scheduler"].step()
    assert lrs[0] == lrs[4] == pytest.approx(1e-4)
    assert lrs[5] == lrs[9] == pytest.approx(0.99e-4)
    assert lrs[10] == pytest.approx(0.99 ** 2 * 1e-4)

    for kind, expected in (("cosine", lambda t: 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * t))),
                           ("poly", lambda t: 1e-5 + (1e-3 - 1e-5) * (1 - t) ** 0.9)):
        task = DepthTask(load_config(_fastdepth_cfg(scheduler=kind, min_lr=1e-5, power=0.9)))
        task._total_steps = lambda: 100
        out = task.configure_optimizers()
        assert out["lr_scheduler"]["interval"] == "step"
        opt, s = out["optimizer"], out["lr_scheduler"]["scheduler"]
        seen = {}
        for step in range(101):
            seen[step] = {g["name"]: g["lr"] for g in opt.param_groups}
            opt.step()
            s.step()
        for step in (0, 25, 50, 100):
            assert seen[step]["decoder"] == pytest.approx(expected(step / 100), rel=1e-6), (kind, step)
        assert seen[100]["encoder"] == pytest.approx(1e-5)  # encoder: 1e-4 down to the same floor
        assert seen[50]["encoder"] < 1e-4


class _Snapshots(L.Callback):
    def __init__(self):
        self.snaps = []

    def _take(self, pl_module):
        self.snaps.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    def on_train_start(self, trainer, pl_module):
        self._take(pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self._take(pl_module)


def test_encoder_frozen_for_the_first_epochs_then_trained(tmp_path):
    from depthlab.training import train

    snaps = _Snapshots()
    cfg = _fastdepth_cfg()
    cfg.update(output_dir=str(tmp_path), name="freeze")
    cfg["train"] = {**cfg["train"], "max_epochs": 2, "freeze_encoder_epochs": 1}
    train(cfg, callbacks=[snaps])
    start, epoch0, epoch1 = snaps.snaps
    enc = [k for k in start if k.startswith("encoder.")]
    dec = [k for k in start if not k.startswith("encoder.")]
    assert all(torch.equal(start[k], epoch0[k]) for k in enc), "encoder changed while frozen"
    assert any(not torch.equal(start[k], epoch0[k]) for k in dec), "decoder did not train"
    assert any(not torch.equal(epoch0[k], epoch1[k]) for k in enc), "encoder not trained after unfreezing"


# --------------------------------------------------------------------------- data module
def test_datamodule_batches_are_seeded_and_sized():
    from depthlab.config import load_config
    from depthlab.training import DepthDataModule

    data = load_config(_config(Path("unused"), data={
        "size": [32, 48], "train_transforms": ["random_horizontal_flip", {"color_jitter": {"brightness": 0.3}}]})).data

    def first(seed):
        dm = DepthDataModule(data, seed=seed)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))

    a, b, c = first(1), first(1), first(2)
    assert a["image"].shape == (4, 3, 32, 48) and a["depth"].shape == (4, 1, 32, 48) and a["mask"].dtype == torch.bool
    assert torch.equal(a["image"], b["image"]) and [m["name"] for m in a["meta"]] == [m["name"] for m in b["meta"]]
    assert not torch.equal(a["image"], c["image"])


def test_a_run_shorter_than_its_first_validation_is_validated_at_the_end(tmp_path):
    """max_steps below one epoch (and no val_check_interval): Lightning never validates, so train()
    validates the final weights once; the run reports metrics and best == the validated last weights."""
    from depthlab.checkpoint import read_checkpoint
    from depthlab.training import train

    cfg = _config(tmp_path / "runs", "short", train={"max_epochs": -1, "max_steps": 2},
                  data={"kwargs": {"n": 16}})  # 16 / batch 4 = 4 steps per epoch > max_steps 2
    result = train(cfg)
    assert result.global_step == 2
    assert math.isfinite(result.metrics["abs_rel"]) and result.metrics["step"] == 2
    _, meta = read_checkpoint(result.best_checkpoint)
    assert meta["metrics"]["abs_rel"] == result.metrics["abs_rel"] and meta["global_step"] == 2


def test_datamodule_warns_when_validation_reads_the_training_images(tmp_path):
    """A folder without splits serves every split: training on it and validating on it is not held-out."""
    import warnings

    import depthlab
    from depthlab.config import load_config
    from depthlab.training import DepthDataModule

    samples = Path(depthlab.__file__).parent / "assets" / "samples" / "nyu"
    data = load_config(_config(tmp_path, data={"dataset": "folder", "root": str(samples), "kwargs": {},
                                               "size": [32, 32], "limit_val": 2})).data
    with pytest.warns(UserWarning, match=r"training and validation share 2 of 2 images .* not held-out"):
        DepthDataModule(data, seed=0).setup("fit")
    synthetic = load_config(_config(tmp_path)).data  # seeded splits, no files: nothing to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DepthDataModule(synthetic, seed=0).setup("fit")


def test_trainer_and_optimiser_read_the_config_dataclasses(tmp_path):
    """Settings left out of a config are the dataclass defaults (one source), including those the trainer
    code once re-stated differently (log_every_n_steps, max_epochs, devices, step_size)."""
    from depthlab.config import OptimConfig, TrainConfig, load_config
    from depthlab.training import DepthTask, build_trainer

    cfg = load_config({"model": {"name": "unet", "kwargs": {"base_channels": 4}}, "train": {"accelerator": "cpu"},
                       "optim": {"name": "sgd", "scheduler": "step", "weight_decay": 0.01}})
    trainer, _ = build_trainer(cfg, tmp_path)
    assert trainer.log_every_n_steps == TrainConfig().log_every_n_steps == 10
    assert trainer.max_epochs == TrainConfig().max_epochs == 1 and trainer.num_devices == 1
    out = DepthTask(cfg).configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == OptimConfig().momentum == 0.9
    assert opt.defaults["weight_decay"] == 0.01 and sched.step_size == OptimConfig().step_size == 10
