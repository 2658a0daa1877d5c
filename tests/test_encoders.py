"""Encoders: the MobileNetV2 ImageNet weights (classifier reference + encoder equivalence) and the
common encoder interface (out_channels / reductions agree with the feature maps)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from depthlab.io import read_rgb
from depthlab.models.encoders import create_encoder
from depthlab.models.weights import read_state_dict

SHARED = Path(__file__).resolve().parents[2] / "shared"
MNV2 = SHARED / "weights" / "mobilenet_v2_imagenet"
needs_mnv2 = pytest.mark.skipif(not (MNV2 / "mobilenet_v2_imagenet.safetensors").exists(),
                                reason=f"shared MobileNetV2 weights not found at {MNV2}")


def _images() -> torch.Tensor:
    """bird, sunflower as (2,3,224,224) in [-1,1] (the weights' input convention = mean 0.5, std 0.5)."""
    x = torch.stack([read_rgb(MNV2 / "test_images" / f"{n}.png") for n in ("bird", "sunflower")])
    return (x - 0.5) / 0.5


@pytest.fixture(scope="module")
def classifier():
    import torchvision

    m = torchvision.models.mobilenet_v2()
    result = m.load_state_dict(read_state_dict(MNV2 / "mobilenet_v2_imagenet.safetensors"), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return m.eval()


@needs_mnv2
def test_imagenet_weights_reproduce_reference_logits(classifier):
    with torch.inference_mode():
        logits = classifier(_images())
    expected = np.load(MNV2 / "test_images" / "expected_logits.npy")
    assert np.abs(logits.numpy() - expected).max() < 2e-4
    prob, idx = torch.softmax(logits, 1).max(1)
    labels = (MNV2 / "imagenet_labels.txt").read_text().splitlines()
    assert [labels[i] for i in idx] == ["chickadee", "daisy"]
    assert prob.numpy() == pytest.approx([0.9807, 0.9689], abs=1e-4)


@needs_mnv2
def test_encoder_features_equal_classifier_trunk(classifier, caplog):
    with caplog.at_level(logging.INFO, logger="depthlab.models.weights"):
        enc = create_encoder("tv_mobilenet_v2", checkpoint_path=MNV2).eval()  # a folder works too
    # documented partial load: exactly the classifier was skipped, and it says so
    assert sorted(enc.skipped_keys) == ["classifier.1.bias", "classifier.1.weight"]
    assert "MobileNetV2 partial load" in caplog.text and "skipped 2 file keys (classifier)" in caplog.text
    assert enc.out_channels == [16, 24, 32, 96, 1280]
    assert enc.reductions == [2, 4, 8, 16, 32]
    assert enc.mean == enc.std == (0.5, 0.5, 0.5)

    x = _images()
    taps, feats = {}, []
    hooks = [classifier.features[i].register_forward_hook(lambda m, i_, o, k=i: taps.__setitem__(k, o))
             for i in (1, 3, 6, 13, 18)]
    with torch.inference_mode():
        classifier(x)
        feats = enc(x)
        random_feats = create_encoder("tv_mobilenet_v2").eval()(x)
    for h in hooks:
        h.remove()
    for f, i in zip(feats, (1, 3, 6, 13, 18)):
        assert f.shape[-1] == 224 // enc.reductions[(1, 3, 6, 13, 18).index(i)]
        assert torch.equal(f, taps[i])
    # not silently ignored: a randomly initialised encoder gives clearly different features
    assert (random_feats[-1] - feats[-1]).abs().mean() > 0.1 * feats[-1].abs().mean()


@needs_mnv2
def test_encoder_loading_is_strict_on_trunk_keys(tmp_path):
    from safetensors.torch import save_file

    state = read_state_dict(MNV2 / "mobilenet_v2_imagenet.safetensors")
    del state["features.5.conv.0.0.weight"]
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    with pytest.raises(RuntimeError, match=r"features\.5\.conv\.0\.0\.weight"):
        create_encoder("tv_mobilenet_v2", checkpoint_path=bad)


@needs_mnv2
def test_truncated_encoder_skips_deeper_stages_and_frozen_bn_stays_eval():
    enc = create_encoder("tv_mobilenet_v2", checkpoint_path=MNV2, out_indices=(1, 3, 6), frozen=True)
    assert enc.out_channels == [16, 24, 32] and enc.reductions == [2, 4, 8]
    assert any(k.startswith("features.18.") for k in enc.skipped_keys)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert all(not m.training for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # with BN frozen, train mode computes exactly what eval mode computes
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    a = [f.clone() for f in enc(x)]
    assert all(torch.equal(u, v) for u, v in zip(a, enc.eval()(x)))


def test_bad_out_indices_and_missing_weights_fail():
    from depthlab.errors import WeightsUnavailableError

    with pytest.raises(ValueError, match="out_indices"):
        create_encoder("tv_mobilenet_v2", out_indices=(6, 3))
    with pytest.raises(WeightsUnavailableError, match="checkpoint_path"):
        create_encoder("tv_mobilenet_v2", pretrained=True)


@pytest.mark.parametrize("name, kwargs", [
    ("tv_mobilenet_v2", {}),
    ("resnet18", {}),
    ("ddrnet23_slim", {}),
])
def test_encoder_interface(name, kwargs):
    """out_channels / reductions describe the returned feature maps (one entry per map, in order)."""
    if name == "ddrnet23_slim":
        pytest.importorskip("depthlab.models.encoders.ddrnet")
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
