"""Encoders: the common encoder interface (out_channels / reductions agree with the feature maps), timm's
offline error and the partial-load rule."""
from __future__ import annotations

import pytest
import torch

from depthlab.models.encoders import create_encoder


@pytest.mark.parametrize("name, kwargs", [
    ("resnet18", {}),
    ("ddrnet23_slim", {}),
])
def test_encoder_interface(name, kwargs):
    """out_channels / reductions describe the returned feature maps (one entry per map, in order)."""
    enc = create_encoder(name, **kwargs).eval()
    x = torch.rand(1, 3, 128, 192)  # divisible by 64 (DDRNet's deepest stride)
    with torch.inference_mode():
        feats = enc(x)
    assert isinstance(feats, list) and len(feats) == len(enc.out_channels) == len(enc.reductions)
    for f, c, r in zip(feats, enc.out_channels, enc.reductions):
        assert f.shape == (1, c, 128 // r, 192 // r)


def test_timm_encoder_offline_error_names_hub_and_local_file():
    """Offline, with nothing cached: a WeightsUnavailableError that names the hub id and checkpoint_path."""
    import subprocess
    import sys

    code = ("from depthlab.models.encoders import TimmEncoder\n"
            "try:\n    TimmEncoder('resnet18', pretrained=True)\n"
            "except Exception as e:\n    print(type(e).__name__ + ': ' + str(e))\n")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-depthlab-test"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("WeightsUnavailableError:"), out
    assert "timm/resnet18" in out and "checkpoint_path" in out


def test_load_partial_rules(tmp_path):
    """The one partial-load rule: prefixes stripped, skipped keys reported, only allowed keys may be missing."""
    from safetensors.torch import save_file

    from depthlab.models.weights import load_partial

    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    src = {f"module.{k}": torch.randn_like(v.float()).to(v.dtype) for k, v in enc.state_dict().items()}
    src["module.fc.weight"] = torch.zeros(10, 4)
    del src["module.1.running_var"]
    save_file(src, str(tmp_path / "cls.safetensors"))
    report = load_partial(enc, tmp_path / "cls.safetensors", "toy", skip=lambda k: k.startswith("fc."),
                          may_miss=lambda k: k == "1.running_var")
    assert report.skipped == ["fc.weight"] and report.missing == ["1.running_var"]
    assert torch.equal(enc[0].weight, src["module.0.weight"]) and torch.equal(enc[1].running_var, torch.ones(4))
    # the same file without the allowance, or with a wrong shape, is "not a toy checkpoint"
    with pytest.raises(RuntimeError, match=r"cls.safetensors: not a toy checkpoint: 0 shape .* 1 missing"):
        load_partial(enc, tmp_path / "cls.safetensors", "toy", skip=lambda k: k.startswith("fc."))
    src["module.0.weight"] = torch.zeros(4, 3, 5, 5)
    with pytest.raises(RuntimeError, match=r"not a toy checkpoint: 1 shape mismatches \(e.g. \['0.weight'\]\), "
                                           r"1 unexpected \(e.g. \['fc.weight'\]\)"):
        load_partial(enc, src, "toy", may_miss=lambda k: k == "1.running_var")


def test_load_partial_tolerates_missing_batchnorm_step_counters(tmp_path):
    """Older PyTorch saves (and converted checkpoints) have no ``num_batches_tracked``; load_state_dict
    accepts them, so the partial-load rule must too -- and nothing else may be missing."""
    from depthlab.models.weights import load_partial

    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = {k: v.clone() for k, v in enc.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = load_partial(enc, state, "toy")
    assert report.missing == ["1.num_batches_tracked"]
    del state["1.running_mean"]
    with pytest.raises(RuntimeError, match=r"1 missing \(e.g. \['1.running_mean'\]\)"):
        load_partial(enc, state, "toy")


def test_freeze_encoder_stops_gradients_and_keeps_batchnorm_statistics():
    from depthlab.models.encoders import encoder_parameter_names, freeze_encoder

    model = torch.nn.Module()
    model.encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model.head = torch.nn.Conv2d(4, 1, 1)
    assert encoder_parameter_names(model) == {"encoder.0.weight", "encoder.0.bias", "encoder.1.weight",
                                              "encoder.1.bias"}
    model.train()
    freeze_encoder(model)
    assert [p.requires_grad for p in model.encoder.parameters()] == [False] * 4
    assert all(p.requires_grad for p in model.head.parameters()) and model.head.training
    before = model.encoder[1].running_mean.clone()
    model.encoder(torch.rand(2, 3, 8, 8))
    assert torch.equal(model.encoder[1].running_mean, before)  # eval mode: statistics kept
    freeze_encoder(model, frozen=False)
    model.train()
    assert all(p.requires_grad for p in model.parameters()) and model.encoder[1].training
