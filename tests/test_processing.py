"""depthlab.processing: the one pipeline (pre-process -> network -> post-process) and its shared pieces."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depthlab.models.registry import WeightsInfo
from depthlab.predictor import image_to_tensor
from depthlab.processing import (AdapterProcessor, Processor, batches_by_size, normalize, processor_for,
                                 resize_to)


def test_normalize_is_x_minus_mean_over_std_for_numbers_and_buffers():
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(normalize(x, mean, std), ref)
    assert torch.equal(normalize(x, torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)), ref)
    assert torch.equal(normalize(x[0], mean, std), ref[0])  # one (3,H,W) image


def test_resize_to_is_a_no_op_at_the_same_size_and_interpolates_otherwise():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert resize_to(x, (4, 4)) is x
    assert resize_to(x, torch.Size([2, 1, 4, 4])) is x  # a shape: its last two entries
    assert torch.equal(resize_to(x, (8, 6)), F.interpolate(x, size=(8, 6), mode="bilinear", align_corners=False))
    assert torch.equal(resize_to(x, (2, 2), mode="nearest"), x[..., ::2, ::2])


def test_batches_by_size_groups_consecutive_same_shape_and_dtype_up_to_batch_size():
    a, b = torch.zeros(3, 4, 4), torch.zeros(3, 4, 5)
    u = torch.zeros(3, 4, 4, dtype=torch.uint8)  # same shape, other dtype: never stacked with a
    items = [a, a, a, b, a, u, u]
    sizes = [len(batch) for batch in batches_by_size(items, 2)]
    assert sizes == [2, 1, 1, 1, 2]
    pairs = [("x", a), ("y", b)]
    assert [[k for k, _ in batch] for batch in batches_by_size(pairs, 8, lambda p: p[1])] == [["x"], ["y"]]
    assert list(batches_by_size([], 4)) == []


def _info(**kw) -> WeightsInfo:
    return WeightsInfo(**{"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "multiple_of": 32, **kw})


def _first_channel(x: torch.Tensor) -> torch.Tensor:
    return x[:, :1]


def test_default_processor_pads_decodes_and_crops_back():
    img = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(1))
    proc = Processor(_info(target_encoding="normalized", max_depth=10.0))
    assert proc.network_size(50, 70) == (64, 96)
    seen = []
    depth = proc(img, lambda x: seen.append(x.shape) or _first_channel(x))
    assert seen == [(2, 3, 64, 96)]
    assert depth.shape == (2, 1, 50, 70)
    assert torch.allclose(depth, 10.0 * img[:, :1])  # decoded ("normalized": x * max_depth), padding cropped away


def test_default_processor_resizes_to_input_size_and_back():
    img = torch.rand(1, 3, 50, 70, generator=torch.Generator().manual_seed(2))
    proc = Processor(_info(), input_size=(40, 40))
    assert proc.network_size(50, 70) == (32, 32)  # rounded to multiple_of
    x, geometry = proc.preprocess(img)
    assert x.shape == (1, 3, 32, 32) and geometry.size == (50, 70) and geometry.network == (32, 32)
    low = torch.ones(1, 1, 8, 8)  # a model predicting at a lower resolution
    out = proc.postprocess(low, geometry)
    assert out.shape == (1, 1, 50, 70) and torch.allclose(out, torch.ones_like(out))


def test_default_processor_converts_uint8_like_float_input():
    arr = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    as_uint8 = image_to_tensor(arr, keep_uint8=True)
    as_float = image_to_tensor(arr)
    assert as_uint8.dtype == torch.uint8 and as_float.dtype == torch.float32
    assert torch.equal(as_uint8.float() / 255, as_float)
    proc = Processor(_info(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    assert torch.equal(proc.preprocess(as_uint8[None])[0], proc.preprocess(as_float[None])[0])


def test_adapter_processor_resizes_uint8_images_and_depth_with_its_own_callables():
    calls = {}

    def resize_image(images, size):
        calls["image"] = (images.dtype, tuple(size))
        return resize_to(images.float(), size).round().to(images.dtype)

    def resize_depth(depth, size):
        calls["depth"] = tuple(size)
        return resize_to(depth, size, mode="bicubic")

    proc = AdapterProcessor(_info(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), lambda h, w: (28, 42),
                            resize_image, resize_depth)
    img = torch.full((1, 3, 20, 30), 255, dtype=torch.uint8)
    depth = proc(img, _first_channel)
    assert calls == {"image": (torch.uint8, (28, 42)), "depth": (20, 30)}
    assert depth.shape == (1, 1, 20, 30) and torch.allclose(depth, torch.ones_like(depth))  # (1 - 0.5) / 0.5
    first = AdapterProcessor(_info(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), lambda h, w: (28, 42), resize_image,
                             normalize_first=True)  # Depth Pro's order: normalise, then resize the floats
    x, _ = first.preprocess(img)
    assert calls["image"] == (torch.float32, (28, 42)) and torch.equal(x, torch.ones_like(x))
    bare = AdapterProcessor(_info())  # the forward resizes itself (Marigold, ZoeDepth): nothing around it
    assert bare.network_size(20, 30) == (20, 30)
    assert torch.equal(bare(img, _first_channel), torch.ones(1, 1, 20, 30))


def test_processor_for_takes_the_models_own_and_refuses_a_size_for_it():
    class Adapter(torch.nn.Module):
        model_name = "adapter"
        depth_info = _info()

        def processor(self):
            return AdapterProcessor(self.depth_info)

    class Plain(torch.nn.Module):
        depth_info = _info(multiple_of=8)

    assert isinstance(processor_for(Adapter()), AdapterProcessor)
    with pytest.raises(ValueError, match="adapter resizes images itself"):
        processor_for(Adapter(), input_size=256)
    plain = processor_for(Plain(), input_size=None, pad_mode="reflect")
    assert type(plain) is Processor and plain.network_size(9, 17) == (16, 24)
    for model in (Plain(), Adapter()):  # checked for every model, as the Predictor takes it
        with pytest.raises(ValueError, match="pad_mode"):
            processor_for(model, pad_mode="wrap")
