"""Predictor: every input form, geometry (pad / resize and back), decoding, batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from depthlab import Predictor
from depthlab.errors import DataError
from depthlab.models import registry
from depthlab.models.registry import WeightsInfo, register_model
from depthlab.models.weights import ASSETS_DIR
from depthlab.predictor import Prediction, image_to_tensor, png16_encoding

REF = ASSETS_DIR / "weights" / "fastdepth_nyu" / "reference"


@pytest.fixture(scope="module")
def predictor():
    return Predictor("fastdepth")


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    return np.asarray(Image.open(REF / "rgb.png").convert("RGB"))


@pytest.fixture(scope="module")
def small(rgb8) -> np.ndarray:
    """A 100x150 crop: not a multiple of 32, so padding and cropping are exercised."""
    return np.ascontiguousarray(rgb8[10:110, 20:170])


def test_fastdepth_reference_through_predictor(predictor):
    pred = predictor(REF / "rgb.png")
    assert isinstance(pred, Prediction)
    assert pred.kind == "metric" and pred.unit == "m" and pred.model == "fastdepth"
    assert pred.depth.dtype == np.float32 and pred.depth.shape == (224, 224)
    expected = np.load(REF / "expected_pred.npy")[0, 0]
    assert np.abs(pred.depth - expected).max() < 1e-4
    # same through predict_tensor (used by evaluation), batched, and from a path string
    x = torch.from_numpy(np.array(Image.open(REF / "rgb.png"))).permute(2, 0, 1).float()[None] / 255
    out = predictor.predict_tensor(torch.cat([x, x.flip(-1)]))
    assert out.shape == (2, 1, 224, 224) and out.dtype == torch.float32
    assert np.abs(out[0, 0].numpy() - expected).max() < 1e-4
    assert np.array_equal(predictor(str(REF / "rgb.png")).depth, pred.depth)


def test_input_forms_agree(predictor, small):
    base = predictor(small).depth
    assert base.shape == (100, 150)
    pil = predictor(Image.fromarray(small)).depth
    flt = predictor(small.astype(np.float32) / 255).depth
    chw = predictor(torch.from_numpy(small).permute(2, 0, 1).float() / 255).depth
    u8t = predictor(torch.from_numpy(small).permute(2, 0, 1).contiguous()).depth
    for other in (pil, flt, chw, u8t):
        np.testing.assert_allclose(other, base, atol=1e-5)
    # uint16 (x * 257 / 65535 == x / 255)
    np.testing.assert_allclose(predictor((small.astype(np.uint16) * 257)).depth, base, atol=1e-5)


def test_grayscale_equals_rgb_replication(predictor, small):
    gray = np.array(Image.fromarray(small).convert("L"))
    rep = predictor(np.repeat(gray[..., None], 3, axis=2)).depth
    for g in (gray, gray[..., None], Image.fromarray(gray), torch.from_numpy(gray).float()[None] / 255):
        np.testing.assert_allclose(predictor(g).depth, rep, atol=1e-5)
    assert not np.allclose(rep, predictor(small).depth)  # it really is a different input


def test_rgba_drops_alpha(predictor, small, tmp_path):
    alpha = np.random.default_rng(0).integers(0, 256, small.shape[:2], dtype=np.uint8)
    rgba = np.dstack([small, alpha])
    base = predictor(small).depth
    np.testing.assert_array_equal(predictor(rgba).depth, base)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(predictor(tmp_path / "rgba.png").depth, base)


def test_uint16_png_file(predictor, small, tmp_path):
    gray16 = (np.asarray(Image.fromarray(small).convert("L")).astype(np.uint16) * 257)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    gray8 = (gray16 // 257).astype(np.uint8)
    np.testing.assert_allclose(predictor(tmp_path / "g16.png").depth, predictor(gray8).depth, atol=1e-5)


def test_exif_rotated_jpeg(predictor, small, tmp_path):
    """Orientation 6 (rotate 90 degrees clockwise to display): stored 150 wide x 100 high -> 100 x 150 output."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(small).save(path, quality=95, exif=exif.tobytes())
    stored = Image.open(path)
    assert stored.size == (150, 100)
    pred = predictor(path)
    assert pred.depth.shape == (150, 100)
    upright = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(pred.depth, predictor(upright).depth)
    # a PIL image with the tag is honoured too
    np.testing.assert_array_equal(predictor(Image.open(path)).depth, pred.depth)


def test_default_is_the_declared_training_size(predictor):
    """Weights that declare their training size (FastDepth 224x224) run at it by default ("auto")."""
    assert predictor.input_size == (224, 224) and predictor.network_size(480, 640) == (224, 224)


def test_padding_is_cropped_back(small):
    """input_size=None: keep resolution, replicate-pad to a multiple of 32, crop the output back."""
    predictor = Predictor("fastdepth", input_size=None)
    x = torch.from_numpy(small).permute(2, 0, 1).float()[None] / 255
    assert predictor.network_size(100, 150) == (128, 160)
    padded = torch.nn.functional.pad(x, (5, 5, 14, 14), mode="replicate")
    with torch.inference_mode():
        ref = predictor.model(padded)["depth"][0, 0, 14:114, 5:155].numpy()
    np.testing.assert_array_equal(predictor(small).depth, ref)


def test_input_size_resizes_and_restores(small):
    p = Predictor("fastdepth", input_size=64)
    assert p.network_size(100, 150) == (64, 96)
    out = p(small).depth
    assert out.shape == (100, 150) and np.isfinite(out).all()
    assert Predictor("fastdepth", input_size="model").network_size(100, 150) == (224, 224)
    assert Predictor("fastdepth", input_size=(100, 150)).network_size(1, 1) == (96, 160)
    with pytest.raises(ValueError, match="input_size"):
        Predictor("fastdepth", input_size="big")



@pytest.mark.parametrize("value, expected", [
    (None, None), ("native", None), ("auto", "auto"), ("model", "model"), (64, 64), ("64", 64),
    ("64x96", (64, 96)), (" 64X96 ", (64, 96)), ([64, 96], (64, 96)), ((64, 96), (64, 96)),
    (np.int64(32), 32), ([np.int64(8), 16], (8, 16)),
])
def test_parse_input_size_reads_every_form(value, expected):
    from depthlab.predictor import parse_input_size

    assert parse_input_size(value) == expected


@pytest.mark.parametrize("value, words", [
    (0, "must be positive"), (-5, "must be positive"), ("0x5", "must be positive"), ([64, -1], "must be positive"),
    ("big", "must be auto, native, model, keep-aspect, N or HxW"), ("64x", "HxW"), ([1, 2, 3], "HxW"), (True, "HxW"),
    (2.5, "HxW"), ([64, 96.0], "HxW"),
])
def test_parse_input_size_refuses_bad_values_in_one_line(value, words):
    from depthlab.config import ConfigError
    from depthlab.predictor import parse_input_size

    with pytest.raises(ConfigError, match="^--input-size ") as e:
        parse_input_size(value, "--input-size")
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="input_size must be positive"):
        Predictor("fastdepth", input_size=-5)

def test_lists_batches_and_tensors(small):
    p = Predictor("fastdepth", batch_size=2)
    a = np.ascontiguousarray(small[:40, :70])
    b = np.ascontiguousarray(a[:, ::-1])
    c = np.ascontiguousarray(small[:32, :64])
    out = p([a, b, c, a])
    assert isinstance(out, list) and [o.shape for o in out] == [(40, 70)] * 2 + [(32, 64), (40, 70)]
    single = Predictor("fastdepth")
    for o, im in zip(out, [a, b, c, a]):
        np.testing.assert_allclose(o.depth, single(im).depth, atol=1e-5)
    batch = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float() / 255
    res = p(batch)
    assert isinstance(res, list) and len(res) == 2
    np.testing.assert_allclose(res[1].depth, out[1].depth, atol=1e-5)


def test_channels_last_and_bf16_options(small):
    base = Predictor("fastdepth")(small).depth
    np.testing.assert_allclose(Predictor("fastdepth", channels_last=True)(small).depth, base, atol=1e-4)
    bf = Predictor("fastdepth", autocast_bf16=True)(small).depth
    assert bf.dtype == np.float32 and np.abs(bf - base).mean() < 0.1  # bf16 is approximate


def test_bad_inputs(predictor, tmp_path):
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        predictor(np.full((32, 32, 3), 200.0, np.float32))
    with pytest.raises(ValueError, match="channels last"):
        predictor(np.zeros((3, 32, 32, 2), np.uint8))
    with pytest.raises(TypeError, match="cannot read an image"):
        predictor(12)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="bad.png: cannot decode"):
        predictor(bad)
    with pytest.raises(ValueError, match="depth_info"):
        Predictor(nn.Conv2d(3, 1, 1))


class _Const(nn.Module):
    """Raw output 2.0 everywhere (encoded target), recording what it was fed."""

    def forward(self, x):
        self.seen = x.detach().clone()
        return {"depth": torch.full_like(x[:, :1], 2.0)}


@pytest.fixture
def inverse_model():
    name = "_test_inverse_const"
    info = WeightsInfo(output_kind="metric", target_encoding="inverse", max_depth=10.0, multiple_of=16,
                       mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    register_model(info, name=name)(lambda: _Const())
    yield name
    registry._REGISTRY.pop(name, None)


def test_decodes_target_and_normalises_from_depth_info(inverse_model):
    p = Predictor(inverse_model, pretrained=False)
    img = np.full((20, 30, 3), 0.75, np.float32)
    pred = p(img)
    assert pred.depth.shape == (20, 30)
    np.testing.assert_allclose(pred.depth, 5.0)  # inverse encoding: max_depth / 2.0
    seen = p.model.seen
    assert seen.shape == (1, 3, 32, 32)  # padded to multiple_of=16
    torch.testing.assert_close(seen, torch.full_like(seen, 1.0))  # (0.75 - 0.5) / 0.25


def test_image_to_tensor_forms(small):
    t = image_to_tensor(small)
    assert t.shape == (3, 100, 150) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert image_to_tensor(np.zeros((5, 6), np.uint8)).shape == (3, 5, 6)


def test_png16_encoding():
    d = np.array([[0.0, 1.2346], [70.0, np.nan]], np.float32)
    v, desc = png16_encoding(d, "metric")
    assert v.dtype == np.uint16 and v.tolist() == [[0, 1235], [65535, 0]]
    assert desc["png16_scale"] == 0.001
    r = np.array([[1.0, 3.0], [2.0, np.inf]])
    v, desc = png16_encoding(r, "relative")
    assert v.tolist() == [[1, 65535], [32768, 0]]
    assert (desc["png16_min"], desc["png16_max"]) == (1.0, 3.0)
    back = desc["png16_min"] + (v[0, 1] - 1) / 65534 * (desc["png16_max"] - desc["png16_min"])
    assert back == pytest.approx(3.0)
