"""DDP on CPU: two gloo processes train two steps and end with identical weights on both ranks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import json, sys
    from depthlab.training import train
    from depthlab.training.callbacks import RankWeightsDump

    cfg = json.load(open(sys.argv[1]))
    train(cfg, [], callbacks=[RankWeightsDump(sys.argv[2])])
""")


def _config(out: Path) -> dict:
    return {
        "name": "ddp", "output_dir": str(out),
        "model": {"name": "unet", "kwargs": {"base_channels": 4}},
        "data": {"dataset": "synthetic", "size": [32, 32], "batch_size": 2, "kwargs": {"n": 8},
                 "train_transforms": ["random_horizontal_flip"], "limit_val": 5},
        "optim": {"lr": 1e-2},
        "train": {"max_epochs": -1, "max_steps": 2, "accelerator": "cpu", "devices": 2, "strategy": "ddp",
                  "deterministic": True, "loggers": ["csv"], "seed": 3},
    }


def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(_config(tmp_path / "runs")))
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    dump = tmp_path / "weights"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEPTHLAB_NO_PROGRESS": "1"}
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(script), str(cfg_file), str(dump)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    start = [torch.load(dump / f"rank{r}_start.pt", weights_only=True)["state_dict"] for r in (0, 1)]
    end = [torch.load(dump / f"rank{r}_end.pt", weights_only=True) for r in (0, 1)]
    assert end[0]["global_step"] == end[1]["global_step"] == 2
    r0, r1 = end[0]["state_dict"], end[1]["state_dict"]
    assert r0.keys() == r1.keys() == start[0].keys()
    params = [k for k in r0 if "running_" not in k and "num_batches_tracked" not in k]
    # batch-norm running statistics are updated from each rank's own batch; parameters must agree
    for key in params:
        assert torch.equal(start[0][key], start[1][key]), f"ranks started apart: {key}"
        assert torch.equal(r0[key], r1[key]), f"ranks diverged: {key}"
    moved = [k for k in params if not torch.equal(start[0][k], r0[k])]
    assert len(moved) > len(params) // 2, "two DDP steps did not update the weights"

    # rank 0 exported the same weights as a depthlab checkpoint that rebuilds the model
    from depthlab.checkpoint import load_checkpoint

    model = load_checkpoint(tmp_path / "runs" / "ddp" / "last.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, r0["model." + key]), key

    # validation metrics synced by torchmetrics across the ranks (3 + 2 of the 5 images, no padding)
    # equal one process validating the same weights on all 5
    import lightning as L

    from depthlab.checkpoint import read_checkpoint
    from depthlab.config import load_config
    from depthlab.training import DepthDataModule, DepthTask

    ddp_val = read_checkpoint(tmp_path / "runs" / "ddp" / "last.safetensors")[1]["metrics"]
    cfg = load_config(_config(tmp_path / "single"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (single,) = trainer.validate(DepthTask(cfg, model=model), datamodule=DepthDataModule(cfg.data, seed=3),
                                 verbose=False)
    assert ddp_val["step"] == 2 and ddp_val["n_images"] == single["val/n_images"] == 5
    for key in ("abs_rel", "rmse", "delta1", "silog", "loss"):
        assert ddp_val[key] == pytest.approx(single[f"val/{key}"], rel=1e-5), key
