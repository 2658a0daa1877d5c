"""Structural checks per architecture: each model has the layers and wiring its description claims."""
from __future__ import annotations

import logging
import math
from collections import Counter

import pytest
import torch
import torch.nn as nn

from depthlab import create_model
from depthlab.checkpoint import load_checkpoint, save_checkpoint
from depthlab.models.blocks import ConvBNReLU, up2
from depthlab.evaluation.speed import count_params as count_parameters
from depthlab.models.encoders import create_encoder
from depthlab.models.encoders.ddrnet import DDRNet23SlimEncoder
from depthlab.types import decode_target


def conv_kinds(module: nn.Module) -> Counter:
    """Count convs as '3x3', '1x1', '5x5', 'dw3x3' (depthwise), 'T3x3' (transposed)."""
    out: Counter = Counter()
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            out[f"T{m.kernel_size[0]}x{m.kernel_size[1]}"] += 1
        elif isinstance(m, nn.Conv2d):
            k = f"{m.kernel_size[0]}x{m.kernel_size[1]}"
            out[("dw" + k) if m.groups > 1 and m.groups == m.in_channels else k] += 1
    return out


def n_modules(module: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def capture_input(module: nn.Module) -> dict:
    """Register a hook storing the first positional input of ``module`` under 'x'."""
    store: dict = {}
    module.register_forward_hook(lambda mod, inp, out: store.__setitem__("x", inp[0].detach()))
    return store


def _x(h=64, w=64, b=2, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ unet
def test_unet_batch_norm_switch_changes_modules():
    with_bn, without = create_model("unet"), create_model("unet", batch_norm=False)
    assert n_modules(with_bn, nn.BatchNorm2d) == 14  # 7 double-conv blocks x 2
    assert n_modules(without, nn.BatchNorm2d) == 0
    # convs followed by BN carry no bias; without BN they do
    assert all(c.bias is None for n, c in with_bn.named_modules() if isinstance(c, nn.Conv2d) and n != "head")
    assert all(c.bias is not None for c in without.modules() if isinstance(c, nn.Conv2d))
    assert count_parameters(with_bn) != count_parameters(without)
    x = _x(40, 56)  # multiples of 8 (three 2x2 poolings), not of 16
    for m in (with_bn.eval(), without.eval()):
        assert m(x)["depth"].shape == (2, 1, 40, 56)


def test_unet_filters_pooling_and_concat_skips():
    m = create_model("unet").eval()
    widths = [m.enc1.conv1.conv.out_channels, m.enc2.conv1.conv.out_channels, m.enc3.conv1.conv.out_channels,
              m.bottleneck.conv1.conv.out_channels]
    assert widths == [64, 128, 256, 512]
    assert conv_kinds(m)["T2x2"] == 3 and m.head.kernel_size == (1, 1) and m.head.out_channels == 1
    calls = []
    m.pool.register_forward_hook(lambda *a: calls.append(1))
    dec3_in = capture_input(m.dec3)
    m(_x())
    assert len(calls) == 3
    assert dec3_in["x"].shape[1] == 256 + 256  # upsampled bottleneck concatenated with enc3


def test_unet_bilinear_upsampling_option():
    m = create_model("unet", upsample="bilinear", base_channels=16)
    assert n_modules(m, nn.ConvTranspose2d) == 0 and n_modules(m, nn.Upsample) == 3
    assert m.eval()(_x(48, 64))["depth"].shape == (2, 1, 48, 64)
    with pytest.raises(ValueError, match="upsample"):
        create_model("unet", upsample="nearest")


# -------------------------------------------------------------------------------------------- smp unet
def test_smp_unet_is_smp_and_loads_local_resnet34(tmp_path, caplog):
    import segmentation_models_pytorch as smp
    import torchvision

    m = create_model("smp_unet_resnet34")
    assert isinstance(m.net, smp.Unet) and m.depth_info.multiple_of == 32
    assert m.eval()(_x(64, 96))["depth"].shape == (2, 1, 64, 96)

    tv = torchvision.models.resnet34(weights=None)  # stands in for an ImageNet file (torchvision layout)
    path = tmp_path / "resnet34_imagenet.pth"
    torch.save(tv.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="depthlab.models.weights"):
        loaded = create_model("smp_unet_resnet34", encoder_checkpoint=str(path))
    assert loaded.encoder_load_report.skipped == ["fc.bias", "fc.weight"] and not loaded.encoder_load_report.missing
    assert "ResNet34 encoder partial load" in caplog.text and "skipped 2 file keys (fc)" in caplog.text
    torch.testing.assert_close(loaded.net.encoder.layer4[2].conv2.weight, tv.layer4[2].conv2.weight)
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="not a ResNet34"):
        create_model("smp_unet_resnet34", encoder_checkpoint=str(tmp_path / "bad.pth"))


# ------------------------------------------------------------------------------------------- NYU study
def test_de_noskip_has_no_layer4_and_no_encoder_skips():
    m = create_model("de_noskip").eval()
    names = [n for n, _ in m.encoder.named_modules()]
    assert any(n.endswith("layer3") for n in names)
    assert not any("layer4" in n for n in names) and not any("fc" == n.split(".")[-1] for n in names)
    assert m.encoder.out_channels == [1024] and m.encoder.reductions == [16]
    assert [b.residual is not None for b in m.blocks] == [False, True, True, True]  # 3 decoder residuals
    assert isinstance(m.head[-1], nn.ReLU)
    feats = capture_input(m.bridge)
    out = m(_x(48, 80))["depth"]  # multiple_of 16
    assert feats["x"].shape == (2, 1024, 3, 5)
    assert out.shape == (2, 1, 48, 80) and (out >= 0).all()


def test_resnete_v1_skips_and_residuals():
    m = create_model("resnete_v1")
    assert conv_kinds(m.blocks)["T3x3"] == 5
    assert [b.skip_bn is not None for b in m.blocks] == [True, True, True, True, False]  # f3, f2, f1, f0
    assert [b.residual is not None for b in m.blocks] == [False, False, True, True, True]
    assert n_modules(m.blocks, nn.BatchNorm2d) == 4 + 3
    assert [b.up[0].out_channels for b in m.blocks] == [256, 128, 64, 64, 32]


def test_resnete_v2_concatenates_image_last_residual_and_output():
    m = create_model("resnete_v2").eval()
    assert not any(b.residual is not None for b in m.blocks)
    assert [b.skip_bn is not None for b in m.blocks] == [True, True, True, True, False]
    assert m.head.in_channels == 3 + 32 + 32
    head_in = capture_input(m.head)
    x = _x()
    m(x)
    torch.testing.assert_close(head_in["x"][:, :3], x)  # the input image itself


def test_resnete_v3_concatenates_encoder_features_and_image():
    m = create_model("resnete_v3").eval()
    assert n_modules(m.blocks, nn.BatchNorm2d) == 0 and n_modules(m.head, nn.BatchNorm2d) == 0
    assert all(isinstance(b[0], nn.ConvTranspose2d) and isinstance(b[1], nn.ReLU) for b in m.blocks)
    # block inputs: deepest feature, then (previous output + encoder feature) channels
    assert [b[0].in_channels for b in m.blocks] == [512, 256 + 256, 128 + 128, 64 + 64, 64 + 64]
    assert conv_kinds(m.head) == Counter({"3x3": 3})
    assert m.head[0].conv.in_channels == 32 + 3
    head_in = capture_input(m.head)
    x = _x()
    m(x)
    torch.testing.assert_close(head_in["x"][:, -3:], x)


@pytest.mark.parametrize("name, enc_channels", [("densenet121_unet", [64, 256, 512, 1024, 1024]),
                                                ("resnet50_unet", [64, 256, 512, 1024, 2048])])
def test_unet_decoder_is_shared_and_built_from_encoder_channels(name, enc_channels):
    from depthlab.models.nyu_study import UNetDecoder

    m = create_model(name).eval()
    assert type(m.decoder) is UNetDecoder and m.encoder.out_channels == enc_channels
    assert m.decoder.intermediate.in_channels == enc_channels[-1]
    c = m.decoder.intermediate.out_channels
    for block, skip, out in zip(m.decoder.blocks, enc_channels[-2::-1], [512, 256, 128, 64]):
        assert block.conv1.conv.in_channels == c + skip and block.conv2.conv.out_channels == out
        c = out
    assert n_modules(m.decoder, nn.BatchNorm2d) == 8
    head_in = capture_input(m.head)
    assert m(_x(64, 96))["depth"].shape == (2, 1, 64, 96)
    assert head_in["x"].shape == (2, 64, 32, 48)  # last block at /2, then resized to the input


# --------------------------------------------------------------------------------------------- DDRNet
OFFICIAL_TOP_LEVEL = {"conv1", "relu", "layer1", "layer2", "layer3", "layer4", "layer3_", "layer4_", "layer5_",
                      "layer5", "compression3", "compression4", "down3", "down4", "spp"}
FAKE_CLASSIFIER = {"down5.0.weight": (256, 128, 3, 3), "last_layer.0.weight": (1024, 512, 1, 1),
                   "last_layer.1.weight": (1024,), "linear.weight": (1000, 1024), "linear.bias": (1000,)}


@pytest.mark.parametrize("h, w", [(64, 96), (128, 128)])
def test_ddrnet_feature_shapes_and_strides(h, w):
    enc = create_encoder("ddrnet23_slim").eval()
    assert isinstance(enc, DDRNet23SlimEncoder)
    with torch.no_grad():
        feats = enc(_x(h, w))
    assert len(feats) == len(enc.out_channels) == len(enc.reductions) == len(enc.feature_names)
    for f, c, r in zip(feats, enc.out_channels, enc.reductions):
        assert f.shape == (2, c, math.ceil(h / r), math.ceil(w / r))
    assert dict(zip(enc.feature_names, enc.reductions)) == {
        "stem": 2, "layer1": 4, "layer2": 8, "low3": 16, "low4": 32, "high": 8, "dappm": 64, "fused": 8}


def test_ddrnet_slim_parameter_count_and_official_names():
    enc = DDRNet23SlimEncoder()
    n = count_parameters(enc)
    seg_head = 2 * 128 + 128 * 64 * 9 + 2 * 64 + 64 * 19 + 19  # BN, 3x3 conv, BN, 1x1 conv (19 classes)
    assert 5.55e6 < n < 5.70e6
    assert abs((n + seg_head) / 5.7e6 - 1) < 0.02  # paper: 5.7 M for DDRNet-23-slim (segmentation)
    assert {name for name, _ in enc.named_children()} == OFFICIAL_TOP_LEVEL
    keys = set(enc.state_dict())
    for k in ("conv1.3.weight", "layer3_.1.bn2.running_var", "layer5.0.downsample.0.weight", "layer5_.0.conv3.weight",
              "down4.3.weight", "compression3.1.weight", "spp.scale1.1.weight", "spp.process4.2.weight",
              "spp.compression.2.weight", "spp.shortcut.2.weight"):
        assert k in keys, k
    assert enc.layer5[0].conv2.stride == (2, 2) and enc.layer5[0].conv3.out_channels == 512


def _official_file(tmp_path, donor: nn.Module, drop_spp: bool = False):
    """A state dict in the official layout: DataParallel 'module.' prefix, wrapped in 'state_dict'."""
    state = {f"module.{k}": v.clone() for k, v in donor.state_dict().items() if not (drop_spp and k.startswith("spp."))}
    g = torch.Generator().manual_seed(1)
    for k, shape in FAKE_CLASSIFIER.items():
        state[f"module.{k}"] = torch.randn(shape, generator=g)
    path = tmp_path / "DDRNet23s_imagenet.pth"
    torch.save({"state_dict": state, "epoch": 1}, path)
    return path


def test_ddrnet_official_checkpoint_loads_skipping_only_the_classifier(tmp_path, caplog):
    torch.manual_seed(0)
    donor = DDRNet23SlimEncoder()
    path = _official_file(tmp_path, donor)
    with caplog.at_level(logging.INFO, logger="depthlab.models.weights"):
        enc = create_encoder("ddrnet23_slim", checkpoint_path=str(path))
    report = enc.load_report
    assert report.skipped == sorted(FAKE_CLASSIFIER) and report.missing == []
    assert "skipped 5 file keys (down5, last_layer, linear)" in caplog.text
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(enc.state_dict()[k], v, rtol=0, atol=0)


def test_ddrnet_imagenet_file_without_dappm_reports_it_missing(tmp_path):
    torch.manual_seed(0)
    donor = DDRNet23SlimEncoder()
    path = _official_file(tmp_path, donor, drop_spp=True)  # the real classification file has no DAPPM
    torch.manual_seed(0)  # the same initialisation as the donor: its DAPPM must stay at that value
    enc = DDRNet23SlimEncoder(checkpoint_path=str(path))
    assert enc.load_report.skipped == sorted(FAKE_CLASSIFIER)
    assert enc.load_report.missing and all(k.startswith("spp.") for k in enc.load_report.missing)
    torch.testing.assert_close(enc.layer4_[1].conv2.weight, donor.layer4_[1].conv2.weight)
    # left at init: equal to the donor's (same seed), i.e. nothing was loaded into it from anywhere
    torch.testing.assert_close(enc.spp.process1[2].weight, donor.spp.process1[2].weight, rtol=0, atol=0)


def test_ddrnet_rejects_foreign_files_and_offline_pretrained(tmp_path):
    from depthlab.errors import WeightsUnavailableError

    torch.save({"conv1.0.weight": torch.zeros(32, 3, 5, 5)}, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="not a DDRNet-23-slim"):
        DDRNet23SlimEncoder(checkpoint_path=str(tmp_path / "other.pth"))
    with pytest.raises(WeightsUnavailableError, match="checkpoint_path"):
        DDRNet23SlimEncoder(pretrained=True)


# ----------------------------------------------------------------------------------------------- Leve
LCB_EXPECTED = {
    "3x3": Counter({"3x3": 1}),
    "3x3+1x1": Counter({"3x3": 1, "1x1": 1}),
    "3x3+3x3": Counter({"3x3": 2}),
    "5x5+5x5": Counter({"5x5": 2}),
    "3x3-dw-separable": Counter({"dw3x3": 1, "1x1": 1}),
}


@pytest.mark.parametrize("lcb", list(LCB_EXPECTED))
def test_leve_lcb_variants_have_the_convs_they_claim(lcb):
    m = create_model("leve", lcb=lcb)
    assert len(m.decoder.blocks) == 3
    for block in m.decoder.blocks:
        assert conv_kinds(block.lcb) == LCB_EXPECTED[lcb]
        for unit in block.lcb:  # every conv followed by BN + ReLU
            assert isinstance(unit, ConvBNReLU)
            assert isinstance(unit.bn, nn.BatchNorm2d) and isinstance(unit.act, nn.ReLU)
    assert m.eval()(_x(64, 96))["depth"].shape == (2, 1, 64, 96)


def test_leve_lcb_parameter_ordering():
    p = {lcb: count_parameters(create_model("leve", lcb=lcb).decoder) for lcb in LCB_EXPECTED}
    assert p["3x3-dw-separable"] < p["3x3"] < p["3x3+1x1"] < p["3x3+3x3"] < p["5x5+5x5"]


def test_leve_skip_variants():
    def skip_in(m):
        return [None if b.skip is None else b.skip.in_channels for b in m.decoder.blocks]

    main, alt, none = (create_model("leve", skip=s) for s in ("main", "alternative", "none"))
    assert skip_in(main) == [32, 32, None]  # layer1 (/4), stem (/2)
    assert skip_in(alt) == [256, 128, None]  # low branch after stage-4 (/32) and stage-3 (/16) fusion
    assert skip_in(none) == [None, None, None]
    assert count_parameters(none) < count_parameters(main) < count_parameters(alt)
    mnv3 = create_model("leve_mobilenetv3")
    assert skip_in(mnv3) == [112, 40, 24, 16, None]
    with pytest.raises(ValueError, match="single-path"):
        create_model("leve_mobilenetv3", skip="alternative")
    with pytest.raises(ValueError, match="LCB"):
        create_model("leve", lcb="7x7")


def test_leve_block_sums_pre_lcb_post_lcb_and_resized_skip_then_1x1_conv():
    from depthlab.models.leve import UpBlock

    block = UpBlock(8, 8, skip_channels=8, lcb="3x3+3x3").eval()
    assert isinstance(block.fuse, ConvBNReLU) and block.fuse.conv.kernel_size == (1, 1)
    with torch.no_grad():
        last_bn = block.lcb[-1].bn
        last_bn.weight.zero_(), last_bn.bias.zero_()  # post-LCB tensor = ReLU(0) = 0
        block.skip.weight.copy_(torch.eye(8).view(8, 8, 1, 1)), block.skip.bias.zero_()
        w = torch.randn(8, 8)  # the final 1x1 conv of the block (eval-mode BN: identity statistics)
        block.fuse.conv.weight.copy_(w.view(8, 8, 1, 1))
        x, skip = torch.randn(1, 8, 4, 6), torch.randn(1, 8, 2, 3)
        y = block(x, skip)
        summed = up2(x) + nn.functional.interpolate(skip, size=(8, 12), mode="bilinear", align_corners=False)
        bn = block.fuse.bn
        expected = torch.relu(torch.einsum("oc,bchw->bohw", w, summed) / torch.sqrt(torch.tensor(1.0 + bn.eps)))
        torch.testing.assert_close(y, expected)
        block.skip.weight.zero_()  # identity shortcut of the pre-LCB tensor only
        expected = torch.relu(torch.einsum("oc,bchw->bohw", w, up2(x)) / torch.sqrt(torch.tensor(1.0 + bn.eps)))
        torch.testing.assert_close(block(x, skip), expected)


def test_leve_output_is_positive_inverse_depth_decoding_to_metres():
    from depthlab.predictor import Predictor

    torch.manual_seed(0)
    m = create_model("leve").eval()
    info = m.depth_info
    assert (info.output_kind, info.target_encoding, info.max_depth) == ("metric", "inverse", 10.0)
    img = _x(64, 96, b=1)
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = m((img - mean) / std)["depth"]
    assert (raw > 0).all()
    metres = decode_target(raw, info.target_encoding, info.max_depth)
    torch.testing.assert_close(metres, 10.0 / raw)
    pred = Predictor(m).predict_tensor(img)
    torch.testing.assert_close(pred, metres, rtol=1e-4, atol=1e-4)


def test_leve_variant_kwargs_survive_a_checkpoint(tmp_path):
    m = create_model("leve", lcb="5x5+5x5", skip="none").eval()
    x = _x(64, 64, b=1)
    with torch.no_grad():
        expected = m(x)["depth"]
    loaded = load_checkpoint(save_checkpoint(m, tmp_path / "leve.safetensors"))
    assert loaded.model_args == {"lcb": "5x5+5x5", "skip": "none"}
    assert conv_kinds(loaded.decoder.blocks[0].lcb) == Counter({"5x5": 2}) and loaded.decoder.blocks[0].skip is None
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["depth"], expected, rtol=0, atol=0)


def test_leve_encoder_checkpoint_uses_the_official_ddrnet_loader(tmp_path):
    torch.manual_seed(0)
    donor = DDRNet23SlimEncoder()
    path = _official_file(tmp_path, donor, drop_spp=True)
    m = create_model("leve", encoder_checkpoint=str(path))
    assert m.encoder.load_report.skipped == sorted(FAKE_CLASSIFIER)
    torch.testing.assert_close(m.encoder.layer2[0].conv1.weight, donor.layer2[0].conv1.weight)
