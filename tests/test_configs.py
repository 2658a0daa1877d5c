"""Every YAML directly in configs/ loads, validates and trains for 2 steps on synthetic scenes.

Overrides shrink each run (64x64 synthetic scenes, batch 2, 2 steps, heavy models slimmed, the
distillation teacher replaced by a tiny random Depth Anything V2); the study settings themselves
are checked against the values the studies used (table in docs/training.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from depthlab.config import ConfigError, load_config
from tiny_models import TINY_DAV2

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_YAMLS = sorted(p.name for p in CONFIGS.glob("*.yaml"))


COMMON = ["data.dataset=synthetic", "data.root=null", "data.size=[64,64]", "data.batch_size=2",
          "data.num_workers=0", "data.limit_train=4", "data.limit_val=2", "train.max_steps=2", "train.max_epochs=1",
          "train.loggers=[]", "train.val_check_interval=null", "train.val_every_n_epochs=1"]

# per config: extra overrides that slim a heavy model or replace a teacher (default: none)
SHRINK = {
    "diode_unet.yaml": ["model.kwargs.base_channels=4", "data.kwargs={}"],
    "aerial_smp_unet.yaml": ["model.kwargs.decoder_channels=[16,16,8,8,8]", "model.kwargs.encoder_pretrained=false",
                             "data.kwargs={}"],
    "finetune_dav2_metric.yaml": ["model.pretrained=false", "data.size=[42,56]",
                                  "model.kwargs.config_overrides=" + json.dumps(TINY_DAV2)],
    **{name: ["model.kwargs.encoder_pretrained=false", "data.train_split=train", "data.test_split=test",
              "data.train_transforms=[{random_rotation: {degrees: 5}}, {random_crop: {size: [60, 60]}}, "
              "{color_jitter: {brightness: [0.8, 1.2]}}, random_horizontal_flip, {resize: {size: [64, 64]}}]"]
       for name in ("nyu_study.yaml", "nyu_study_l1.yaml", "nyu_study_berhu.yaml", "nyu_study_ssim_l1.yaml")},
    "leve.yaml": ["model.kwargs.encoder_pretrained=false"],  # DDRNet's ImageNet file is not in CI
    "leve_kd.yaml": ["model.kwargs.encoder_pretrained=false", "distill.teacher=depth_anything_v2_vits",
                     "distill.teacher_pretrained=false",
                     "distill.teacher_input_size=70", "distill.teacher_kwargs=" + json.dumps(
                         {"config_overrides": TINY_DAV2})],
}
def test_the_study_configs_exist():
    expected = {"aerial_smp_unet.yaml", "nyu_study.yaml", "nyu_study_l1.yaml", "nyu_study_berhu.yaml",
                "nyu_study_ssim_l1.yaml", "leve.yaml", "leve_kd.yaml", "diode_unet.yaml", "synthetic_quick.yaml",
                "finetune_dav2_metric.yaml"}
    assert expected <= set(ALL_YAMLS)


@pytest.mark.parametrize("name", ALL_YAMLS)  # every config, in the default CI run (about 4 s each)
def test_config_runs_two_steps(name, tmp_path):
    from depthlab.training import train

    overrides = [*COMMON, f"output_dir={tmp_path}", *SHRINK.get(name, [])]
    if name == "leve_kd.yaml":
        overrides.append(f"distill.cache_dir={tmp_path / 'cache'}")
    cfg = load_config(CONFIGS / name, overrides)
    assert cfg.data.dataset == "synthetic"
    result = train(CONFIGS / name, overrides)
    assert result.global_step == 2
    assert result.last_checkpoint is not None and result.last_checkpoint.exists()
    if name == "leve_kd.yaml":  # the teacher's maps were cached for the 4 training images
        assert len(list((tmp_path / "cache").glob("*.npy"))) == 4


# ------------------------------------------------------------------------------------ study settings
def _terms(cfg) -> dict[str, float]:
    t = cfg.loss.terms
    return dict(t) if isinstance(t, dict) else {d["name"]: float(d.get("weight", 1.0)) for d in t}


def test_nyu_study_files_share_the_base_and_differ_in_the_loss():
    """Study 001 section 3-5 (docs/studies/nyu_six_models.md): one base, three losses (SSIM + L1 equal weights)."""
    want = {"nyu_study_l1.yaml": {"l1": 1.0}, "nyu_study_berhu.yaml": {"berhu": 1.0},
            "nyu_study_ssim_l1.yaml": {"ssim": 1.0, "l1": 1.0}}
    for name, terms in want.items():
        cfg = load_config(CONFIGS / name)
        assert _terms(cfg) == terms, name
        assert (cfg.optim.name, cfg.data.batch_size, cfg.data.size, cfg.train.max_epochs) == ("adam", 64, [128, 128], 50)
        assert cfg.data.train_transforms == [
            {"random_rotation": {"degrees": 5}}, {"random_crop": {"size": [480, 480]}},
            {"color_jitter": {"brightness": [0.8, 1.2], "contrast": None, "saturation": None}},
            {"random_horizontal_flip": {"p": 0.5}}, {"resize": {"size": [128, 128]}}]
        assert cfg.data.val_transforms == [{"resize": {"size": [128, 128]}}]
        assert (cfg.data.dataset, cfg.data.train_split, cfg.data.test_split, cfg.data.val_split) == \
            ("nyu", "train1111", "test338", None)
        assert (cfg.data.target_encoding, cfg.data.max_depth) == ("normalized", 10.0)
        assert cfg.model.kwargs == {"encoder_pretrained": True, "depth_info": {"target_encoding": "normalized"}}
    assert load_config(CONFIGS / "nyu_study_ssim_l1.yaml").loss.params["ssim"]["data_range"] == 1.0
    text = (CONFIGS / "nyu_study.yaml").read_text()
    for model in ("de_noskip", "resnete_v1", "resnete_v2", "resnete_v3", "densenet121_unet", "resnet50_unet"):
        assert model in text


def test_leve_and_leve_kd_settings():
    leve = load_config(CONFIGS / "leve.yaml")
    assert leve.model.name == "leve"
    assert leve.model.kwargs == {"lcb": "3x3+3x3", "skip": "main", "encoder_pretrained": True}
    assert (leve.train.max_epochs, leve.data.batch_size, leve.optim.lr) == (20, 8, 1e-4)
    assert (leve.optim.scheduler, leve.optim.step_size, leve.optim.gamma) == ("step", 5, 0.99)
    assert _terms(leve) == {"l1": 0.1, "gradient": 1.0, "ssim": 1.0}
    assert (leve.data.target_encoding, leve.train.protocol) == ("inverse", "leve_nyu")
    assert {"random_channel_swap": {"p": 0.5}} in leve.data.train_transforms
    assert (leve.data.size, leve.train.val_check_interval, leve.train.monitor) == ([480, 640], 1000, "val/rmse")
    kd = load_config(CONFIGS / "leve_kd.yaml")
    assert kd.distill.teacher == "depth_anything_v1_vitl" and kd.distill.epsilon == 0.25
    assert kd.model == leve.model and kd.loss == leve.loss and kd.optim == leve.optim  # from the base


def test_diode_and_aerial_settings():
    d = load_config(CONFIGS / "diode_unet.yaml")
    assert (d.model.name, d.model.kwargs["batch_norm"], d.model.kwargs["base_channels"]) == ("unet", False, 64)
    assert (d.data.size, d.optim.lr, d.data.batch_size, d.train.max_epochs) == ([256, 256], 2e-4, 24, 10)
    assert _terms(d) == {"ssim": 0.55, "edge": 0.45, "eigen_silog": 0.0, "l1": 0.05}  # Table 2
    assert d.loss.params["ssim"] == {"window_size": 11, "data_range": 10.0, "halve": False}
    assert (d.data.kwargs, d.train.protocol, d.train.monitor) == ({"scene_type": "indoors"}, "diode:max_depth=10", "val/rmse")
    a = load_config(CONFIGS / "aerial_smp_unet.yaml")
    assert (a.model.name, a.data.dataset, a.optim.name, a.optim.lr, a.train.max_epochs) == \
        ("smp_unet_resnet34", "aerial", "adam", 1e-4, 10)
    assert _terms(a) == {"huber": 1.0} and a.loss.params == {"huber": {"delta": 1.0}}
    assert a.data.kwargs == {"tile_size": 256, "ground_height": 0.01}


# ------------------------------------------------------------------------------ config schema additions
def test_checkpoint_every_n_steps_is_a_train_field():
    from depthlab.training.train import resolve_config

    cfg = load_config({}, ["train.checkpoint_every_n_steps=3"])
    assert cfg.train.checkpoint_every_n_steps == 3
    assert resolve_config({}, ["train.checkpoint_every_n_steps=5"]).train.checkpoint_every_n_steps == 5
    assert load_config({}).train.checkpoint_every_n_steps is None
    with pytest.raises(ConfigError, match="train.checkpoint_every_n_steps"):
        load_config({}, ["train.checkpoint_every_n_steps=0"])


def test_distill_fields_validate():
    cfg = load_config({}, ["distill.teacher=fastdepth", "distill.epsilon=0.1", "distill.cache=false",
                           "distill.teacher_input_size=[64,96]"])
    assert (cfg.distill.cache, cfg.distill.teacher_input_size) == (False, [64, 96])
    with pytest.raises(ConfigError, match=r"distill.epsilon: must be in \[0, 1\]"):
        load_config({}, ["distill.epsilon=1.5"])


def test_training_without_validation_split(tmp_path):
    from depthlab.training import train

    assert load_config({}, ["data.val_split=null"]).data.val_split is None
    r = train(CONFIGS / "synthetic_quick.yaml", [*COMMON, f"output_dir={tmp_path}", "data.val_split=null"])
    assert r.global_step == 2 and r.best_checkpoint is not None and r.best_checkpoint.exists()
    assert r.last_metrics == {}  # no validation ran
    # the documented files and no others: Lightning's own epoch=N-step=M.ckpt is not written (a full copy of
    # model and optimiser), and best.safetensors is last.safetensors (one file on disk, two names)
    ckpts = sorted(p.relative_to(r.run_dir).as_posix() for p in r.run_dir.rglob("*.ckpt"))
    assert ckpts == ["checkpoints/last.ckpt"]
    assert r.best_checkpoint.samefile(r.last_checkpoint)


@pytest.mark.slow  # ~20-45 s on a shared 2-core CPU; the synthetic run above keeps the config in the default run
def test_aerial_config_trains_on_geotiff_tiles(tmp_path):
    """aerial_smp_unet.yaml on the real `aerial` loader: 2 GeoTIFF pairs of 128x128 cut into 64x64 tiles."""
    rasterio = pytest.importorskip("rasterio")
    import numpy as np
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from depthlab.training import train

    def write(path, bands, nodata=None):
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                           count=bands.shape[0], dtype=bands.dtype.name, crs=CRS.from_epsg(25832),
                           transform=from_origin(500000.0, 5600000.0, 0.5, 0.5), nodata=nodata) as dst:
            dst.write(bands)

    rng = np.random.default_rng(0)
    root = tmp_path / "aerial"
    for name in ("a", "b"):
        write(root / "rgb" / f"{name}.tif", rng.integers(0, 256, (3, 128, 128)).astype(np.uint8))
        write(root / "height" / f"{name}.tif", rng.uniform(0.5, 30.0, (1, 128, 128)).astype(np.float32),
              nodata=-9999.0)
    overrides = [f"output_dir={tmp_path}", f"data.root={root}", "data.size=[64,64]", "data.kwargs.tile_size=64",
                 "data.batch_size=4", "data.num_workers=0", "train.max_steps=2", "train.loggers=[]",
                 "model.kwargs.decoder_channels=[16,16,8,8,8]", "model.kwargs.encoder_pretrained=false"]
    r = train(CONFIGS / "aerial_smp_unet.yaml", overrides)
    assert r.global_step == 2 and r.last_metrics["n_images"] == 8  # 2 rasters x 4 tiles (no splits/ folder)
    from depthlab.checkpoint import load_checkpoint

    assert load_checkpoint(r.best_checkpoint).depth_info.gsd == 0.5  # recorded: tiled prediction resamples to it
