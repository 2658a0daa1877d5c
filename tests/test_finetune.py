"""Fine-tuning Depth Anything V2 on metric ground truth through the Lightning task (tiny random model).

configs/finetune_dav2_metric.yaml runs with the tiny overrides it documents: relative model + metric
head (sigmoid x max_depth), SILog, a lower encoder learning rate and a frozen first epoch.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

import depthlab

pytest.importorskip("transformers")

from tiny_models import TINY_DAV2  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "finetune_dav2_metric.yaml"
TINY = ("model.kwargs.config_overrides={backbone_config: {hidden_size: 32, num_hidden_layers: 4, "
        "num_attention_heads: 2, out_indices: [1, 2, 3, 4], image_size: 70}, reassemble_hidden_size: 32, "
        "neck_hidden_sizes: [8, 16, 32, 32], fusion_hidden_size: 16, head_hidden_size: 8}")


def overrides(tmp_path, *extra):
    return ["model.pretrained=false", TINY, f"output_dir={tmp_path}", "data.size=[42,56]", "data.batch_size=2",
            "data.kwargs.n=8", "data.limit_val=2", "data.train_transforms=[]", "train.accelerator=cpu",
            "train.devices=1", "train.loggers=[csv]", "optim.warmup_steps=0", "optim.scheduler=null", *extra]


def test_metric_head_option_and_encoder_groups():
    model = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, head="metric", max_depth=12)
    assert model.depth_info.output_kind == "metric" and model.depth_info.max_depth == 12
    assert "metric head (sigmoid x 12 m)" in model.depth_info.notes and "Relative (" not in model.depth_info.notes
    assert model.hf.config.depth_estimation_type == "metric"
    with torch.no_grad():
        d = model(torch.randn(2, 3, 42, 56))["depth"]
    assert d.shape == (2, 1, 42, 56) and 0 < float(d.min()) and float(d.max()) < 12
    with pytest.raises(ValueError, match="head must be 'relative' or 'metric'"):
        depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, head="bins", max_depth=12)
    with pytest.raises(ValueError, match="needs max_depth"):
        depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, head="metric")

    from depthlab.config import apply_overrides, load_config
    from depthlab.training.task import DepthTask

    cfg = apply_overrides(load_config(CONFIG), overrides(Path("unused")))
    task = DepthTask(cfg)
    groups = {g["name"]: g for g in task.param_groups()}
    enc = {id(p) for p in groups["encoder"]["params"]}
    named = dict(task.model.named_parameters())
    # the whole DINOv2 backbone (patch embedding, blocks, final norm) is the encoder; neck and head are not
    assert id(named["hf.backbone.embeddings.patch_embeddings.projection.weight"]) in enc
    assert id(named["hf.backbone.encoder.layer.0.mlp.fc1.weight"]) in enc
    assert id(named["hf.backbone.layernorm.weight"]) in enc
    assert id(named["hf.head.conv3.weight"]) not in enc and id(named["hf.neck.convs.0.weight"]) not in enc
    assert groups["encoder"]["lr"] == pytest.approx(cfg.optim.encoder_lr) == pytest.approx(cfg.optim.lr / 10)
    assert task.freeze_encoder_epochs == 1


def test_finetuning_steps_lower_the_training_loss():
    """12 steps of the Lightning task on one fixed batch of synthetic scenes (seed 0): the loss drops."""
    from depthlab.config import apply_overrides, load_config
    from depthlab.training.datamodule import DepthDataModule
    from depthlab.training.task import DepthTask

    cfg = apply_overrides(load_config(CONFIG), overrides(Path("unused"), "data.size=[28,42]", "data.batch_size=4",
                                                         "loss.terms={huber: 1.0}", "optim.lr=3e-3",
                                                         "optim.encoder_lr=3e-4", "train.freeze_encoder_epochs=0"))
    L.seed_everything(0)
    task = DepthTask(cfg)
    dm = DepthDataModule(cfg.data, seed=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, b, i):
            losses.append(float(outputs["loss"]))

    steps = 12
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    assert len(losses) == steps
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


class _Record(L.Callback):
    def __init__(self):
        self.backbone_after_epoch: list[torch.Tensor] = []
        self.head_after_epoch: list[torch.Tensor] = []
        self.model = None

    def on_train_epoch_end(self, trainer, pl_module):
        hf = pl_module.model.hf
        self.backbone_after_epoch.append(hf.backbone.encoder.layer[0].mlp.fc1.weight.detach().clone())
        self.head_after_epoch.append(hf.head.conv3.weight.detach().clone())
        self.model = pl_module.model


def test_freeze_schedule_and_the_checkpoint_reloads_into_an_identical_model(tmp_path):
    from depthlab.checkpoint import load_checkpoint
    from depthlab.predictor import Predictor
    from depthlab.training import train

    torch.manual_seed(0)
    init = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, head="metric", max_depth=20)
    rec = _Record()
    # epoch 0: encoder frozen (train.freeze_encoder_epochs=1 in the config); epoch 1: everything trains
    result = train(CONFIG, overrides(tmp_path, "train.max_epochs=2", "data.kwargs.n=2", "data.val_split=null",
                                     "data.size=[28,42]", "optim.lr=1e-3", "optim.encoder_lr=1e-4", "train.seed=0"),
                   callbacks=[rec])
    w0 = init.hf.backbone.encoder.layer[0].mlp.fc1.weight  # same seed -> the initial weights train() built
    assert torch.equal(rec.backbone_after_epoch[0], w0)  # frozen during the first epoch
    assert not torch.equal(rec.backbone_after_epoch[1], rec.backbone_after_epoch[0])  # then trained
    assert not torch.equal(rec.head_after_epoch[0], init.hf.head.conv3.weight)  # the head trains from step 1

    loaded = load_checkpoint(result.last_checkpoint).eval()
    trained = rec.model.eval()
    assert loaded.depth_info.output_kind == "metric" and loaded.depth_info.max_depth == 20
    assert loaded.hf.config.depth_estimation_type == "metric"
    ref_state = trained.state_dict()
    assert set(loaded.state_dict()) == set(ref_state)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    x = torch.rand(1, 3, 42, 56, generator=torch.Generator().manual_seed(3))
    assert torch.equal(Predictor(loaded).predict_tensor(x), Predictor(trained).predict_tensor(x))
