"""Checkpoints rebuild their model from the header alone, without the files the model was first built from."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors import safe_open

from depthlab import create_model, load_checkpoint, save_checkpoint
from depthlab.checkpoint import read_checkpoint


def test_encoder_init_file_is_not_needed_to_reload(tmp_path):
    enc = tmp_path / "resnet34_imagenet.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), enc)
    model = create_model("smp_unet_resnet34", encoder_checkpoint=str(enc)).eval()
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    enc.unlink()  # the ImageNet file is gone: the checkpoint must not need it

    _, meta = read_checkpoint(ckpt)
    assert "encoder_checkpoint" not in meta["model_args"]
    assert meta["init_args"] == {"encoder_checkpoint": str(enc)}  # kept for provenance
    loaded = load_checkpoint(ckpt)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(x)["depth"], model(x)["depth"])


def test_checkpoint_is_plain_safetensors_with_a_json_header(tmp_path):
    model = create_model("unet", base_channels=8).eval()
    ckpt = save_checkpoint(model, tmp_path / "u.safetensors", metrics={"rmse": 0.5})
    with safe_open(str(ckpt), framework="pt") as f:
        header = json.loads(f.metadata()["depthlab"])
    assert header["model_name"] == "unet" and header["metrics"] == {"rmse": 0.5}
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed, not left behind


def test_plain_weight_file_is_refused_with_the_alternative(tmp_path):
    p = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(p))
    with pytest.raises(ValueError, match="create_model\\(name, checkpoint_path"):
        load_checkpoint(p)


def test_atomic_outputs_get_normal_permissions(tmp_path):
    """Temp files are created 0600; the published file must follow the umask like a plain open()."""
    import os

    from depthlab.io import write_json

    old = os.umask(0o022)
    try:
        j = write_json(tmp_path / "r.json", {"a": 1})
        c = save_checkpoint(create_model("unet", base_channels=8), tmp_path / "c.safetensors")
        from depthlab.export.onnx import export_onnx

        o = tmp_path / "m.onnx"
        export_onnx(create_model("fastdepth").eval(), o, (1, 3, 64, 64))
    finally:
        os.umask(old)
    assert oct(j.stat().st_mode & 0o777) == oct(0o644)
    assert oct(c.stat().st_mode & 0o777) == oct(0o644)
    assert oct(o.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors", "m.onnx", "r.json"]  # no temp files left
