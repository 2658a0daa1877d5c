"""Knowledge distillation: the loss, the teacher-kind conversion, the on-disk teacher cache, its
agreement with the geometric augmentations, and short distillation runs with a tiny randomly
initialised Depth Anything V2 teacher and a zoo teacher (nothing is downloaded)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision.transforms.v2.functional as TF

from depthlab.data.transforms import CenterCrop, Compose, RandomCrop, RandomHorizontalFlip, Resize
from depthlab.losses import build_loss, distillation_loss, max_normalized_l1
from depthlab.models.registry import WeightsInfo
from depthlab.training.distill import (
    DISPARITY_FLOOR,
    Teacher,
    TeacherCache,
    WithTeacher,
    build_distillation,
    teacher_to_encoding,
)

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from tiny_models import TINY_DAV2  # noqa: E402

TINY_DAV2_TEACHER = [
    "distill.teacher=depth_anything_v2_vits", "distill.teacher_pretrained=false", "distill.teacher_input_size=70",
    "distill.teacher_kwargs=" + json.dumps({"config_overrides": TINY_DAV2}),
]


def _run_overrides(tmp_path, name, *extra):
    return [f"output_dir={tmp_path}", f"name={name}", "data.dataset=synthetic", "data.size=[64,64]",
            "data.batch_size=2", "data.limit_train=4", "data.limit_val=2", "train.max_steps=2",
            "train.loggers=[]", "model.name=unet", "model.kwargs={base_channels: 4}", *extra]


# ----------------------------------------------------------------------------------------------- loss
def test_distillation_loss_matches_hand_computation():
    pred = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])
    target = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]]]])
    teacher = torch.tensor([[[[3.0, 6.0], [1.0, 100.0]]]])
    mask = torch.tensor([[[[True, True], [True, False]]]])
    # valid pixels: pred 1,2,4 (max 4) -> .25 .5 1 ; teacher 3,6,1 (max 6) -> .5 1 1/6
    kd = (abs(0.25 - 0.5) + abs(0.5 - 1.0) + abs(1.0 - 1 / 6)) / 3
    student = (1 + 0 + 2) / 3  # L1 on the valid pixels
    assert max_normalized_l1(pred, teacher, mask).item() == pytest.approx(kd, abs=1e-6)
    got = distillation_loss(pred, target, teacher, mask, epsilon=0.25)
    assert got.item() == pytest.approx(0.75 * student + 0.25 * kd, abs=1e-6)
    total, terms = distillation_loss(pred, target, teacher, mask, epsilon=0.5, return_terms=True)
    assert total.item() == pytest.approx(0.5 * student + 0.5 * kd, abs=1e-6)
    assert terms["student"].item() == pytest.approx(student) and terms["kd"].item() == pytest.approx(kd)


def test_distillation_loss_is_scale_invariant_in_teacher_and_gradients():
    torch.manual_seed(0)
    pred = torch.rand(2, 1, 5, 6, requires_grad=True)
    target, teacher = torch.rand(2, 1, 5, 6), torch.rand(2, 1, 5, 6)
    mask = torch.rand(2, 1, 5, 6) > 0.3
    a = distillation_loss(pred, target, teacher, mask, epsilon=0.1)
    b = distillation_loss(pred, target, 37.0 * teacher, mask, epsilon=0.1)
    assert torch.allclose(a, b, atol=1e-6)
    a.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[~mask] == 0).all()  # masked pixels get no gradient


def test_epsilon_zero_equals_plain_loss_and_bad_epsilon_errors():
    torch.manual_seed(1)
    pred, target = torch.rand(2, 1, 8, 8) + 0.1, torch.rand(2, 1, 8, 8) + 0.1
    teacher = torch.full_like(pred, float("nan"))  # must not matter at epsilon 0
    loss = build_loss({"l1": 0.1, "gradient": 1.0, "ssim": 1.0})
    plain = loss(pred, target, None, None)
    assert torch.equal(distillation_loss(pred, target, teacher, None, epsilon=0.0, student_loss=loss), plain)
    with pytest.raises(ValueError, match="epsilon must be in"):
        distillation_loss(pred, target, teacher, epsilon=1.5)


# ------------------------------------------------------------------------------ teacher conversion
def test_teacher_to_encoding_rules():
    d = torch.tensor([[[[1.0, 2.0], [5.0, 0.0]]]])
    # metric / relative teacher -> encode_target (inverse = max_depth / d; 0 stays 0)
    inv = teacher_to_encoding(d, "metric", "inverse", 10.0)
    assert torch.allclose(inv, torch.tensor([[[[10.0, 5.0], [2.0, 0.0]]]]))
    assert torch.equal(teacher_to_encoding(d, "relative", "depth", 10.0), d)
    assert torch.allclose(teacher_to_encoding(d, "metric", "normalized", 10.0), d / 10)
    # disparity -> inverse student: unchanged; depth student: 1/disparity, clamped at a floor
    disp = torch.tensor([[[[4.0, 2.0], [1.0, -3.0]]]])
    assert torch.equal(teacher_to_encoding(disp, "disparity", "inverse", 10.0), disp)
    depth = teacher_to_encoding(disp, "disparity", "depth", 10.0)
    floor = DISPARITY_FLOOR * 4.0
    assert torch.allclose(depth, torch.tensor([[[[0.25, 0.5], [1.0, 1 / floor]]]]))
    with pytest.raises(ValueError, match="kind"):
        teacher_to_encoding(d, "banana", "depth", 10.0)


# ----------------------------------------------------------------------------- cache and geometry
class PixelTeacher(nn.Module):
    """A per-pixel 'depth network' (1x1 convolution + softplus): its prediction of a flipped or
    cropped image is exactly the flipped or cropped prediction, which makes geometry checks exact."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1))
            self.conv.bias.fill_(0.3)
        self.depth_info = WeightsInfo(output_kind="metric", target_encoding="depth", max_depth=10.0,
                                      mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def forward(self, x):
        return {"depth": nn.functional.softplus(self.conv(x))}


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return dict(self.samples[i])


def _samples(n=3, h=12, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        depth = torch.rand(1, h, w, generator=g) * 5 + 0.5
        out.append({"image": torch.rand(3, h, w, generator=g), "depth": depth, "mask": depth > 1.0,
                    "meta": {"name": f"s{i}"}})
    return out


def test_cache_written_once_then_reused(tmp_path):
    teacher = Teacher(model=PixelTeacher(), batch_size=2)
    ds = ListDataset(_samples(3))
    cache = TeacherCache(tmp_path / "cache", teacher)
    assert cache.fill(ds, progress=False) == {"images": 3, "computed": 3, "cached": 0}
    assert teacher.calls == 2  # batches of 2 + 1
    files = sorted(p.name for p in (tmp_path / "cache").glob("*.npy"))
    assert len(files) == 3
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert sorted(index["entries"]) == sorted(f[:-4] for f in files)
    assert {e["name"] for e in index["entries"].values()} == {"s0", "s1", "s2"}
    assert np.load(tmp_path / "cache" / files[0]).dtype == np.float16
    # a second cache object (a new run) over the same folder computes nothing
    again = TeacherCache(tmp_path / "cache", teacher)
    assert again.fill(ds, progress=False) == {"images": 3, "computed": 0, "cached": 3}
    assert teacher.calls == 2
    img = ds[1]["image"]
    stored = again.get(img)
    assert teacher.calls == 2 and again.hits == 4
    fresh = teacher.predict(img[None])[0]
    assert torch.allclose(stored, fresh, rtol=1e-3, atol=1e-3)  # float16 storage
    # a new image is a miss: computed on the fly and stored
    new = torch.rand(3, 12, 16)
    again.get(new)
    assert again.misses == 1 and again.lookup(new) is not None


def test_cache_key_depends_on_content_teacher_and_size(tmp_path):
    img = torch.rand(3, 8, 8)
    t1 = Teacher(model=PixelTeacher())
    c1 = TeacherCache(tmp_path, t1)
    assert c1.key(img) == c1.key(img.clone())
    assert c1.key(img) != c1.key(img + 1e-3)
    other = PixelTeacher()
    with torch.no_grad():
        other.conv.bias.fill_(0.4)
    assert TeacherCache(tmp_path, Teacher(model=other)).key(img) != c1.key(img)
    assert TeacherCache(tmp_path, Teacher(model=PixelTeacher(), input_size=(64, 64))).key(img) != c1.key(img)


def test_cached_map_follows_flip_and_crop_exactly(tmp_path):
    teacher = Teacher(model=PixelTeacher())
    ds = ListDataset(_samples(1, h=12, w=16))
    cache = TeacherCache(tmp_path, teacher)
    cache.fill(ds, progress=False)
    raw = ds[0]
    # flip: the cached map of the un-augmented image, flipped with the sample, equals the teacher's
    # prediction of the flipped image (a per-pixel teacher commutes with the flip)
    flipped = WithTeacher(ds, cache, RandomHorizontalFlip(p=1.0))[0]
    assert torch.equal(flipped["image"], TF.horizontal_flip(raw["image"]))
    expect = teacher.predict(flipped["image"][None])[0].half().float()
    assert torch.equal(flipped["teacher"], expect)
    assert torch.equal(flipped["depth"], TF.horizontal_flip(raw["depth"]))
    # crop: teacher map cropped like the depth, equal to the prediction of the cropped region
    crop = RandomCrop((6, 7), generator=torch.Generator().manual_seed(3))
    cropped = WithTeacher(ds, cache, crop)[0]
    top, left = crop.last_offset
    assert torch.equal(cropped["depth"], raw["depth"][:, top:top + 6, left:left + 7])
    expect = teacher.predict(cropped["image"][None])[0].half().float()
    assert torch.equal(cropped["teacher"], expect)
    # resize: nearest, exactly like depth
    both = WithTeacher(ds, cache, Compose([CenterCrop((12, 12)), Resize(size=(6, 6))]))[0]
    cached = cache.lookup(raw["image"])
    ref = Compose([CenterCrop((12, 12)), Resize(size=(6, 6))])({"depth": cached, "image": raw["image"]})
    assert torch.equal(both["teacher"], ref["depth"])


def test_tiny_dav2_cached_map_flips_with_the_sample(tmp_path):
    teacher = Teacher("depth_anything_v2_vits", pretrained=False, input_size=70,
                      kwargs={"config_overrides": TINY_DAV2})
    assert teacher.kind == "disparity"
    # the adapter resizes itself (its processor's rule) to the requested 70, not to the default 518
    size = teacher.identity(28, 42)["input_size"]
    assert size == list(teacher.model.input_size_for(28, 42)) and max(size) == 70
    assert all(not p.requires_grad for p in teacher.model.parameters())
    ds = ListDataset(_samples(1, h=28, w=42))
    cache = TeacherCache(tmp_path, teacher)
    cache.fill(ds, progress=False)
    raw = ds[0]
    out = WithTeacher(ds, cache, RandomHorizontalFlip(p=1.0))[0]
    pred = teacher.predict(raw["image"][None])[0]
    assert torch.allclose(out["teacher"], TF.horizontal_flip(pred), rtol=2e-3, atol=1e-4)


# ------------------------------------------------------------------------------------- training runs
class CountCalls:
    def __init__(self, monkeypatch):
        self.n = 0
        original = Teacher.predict

        def counted(teacher, images):
            self.n += 1
            return original(teacher, images)

        monkeypatch.setattr(Teacher, "predict", counted)


def test_distillation_run_with_tiny_dav2_cache_reused_teacher_frozen(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import Callback

    from depthlab.training import train

    calls = CountCalls(monkeypatch)
    seen = {}

    class Inspect(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["teacher_in_batch"] = "teacher" in batch
            seen["grads"] = [p.grad for p in pl_module.teacher.model.parameters()]
            seen["requires_grad"] = [p.requires_grad for p in pl_module.teacher.model.parameters()]
            opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
            seen["in_optimiser"] = any(id(p) in opt_params for p in pl_module.teacher.model.parameters())
            seen["loss_terms"] = sorted(k for k in trainer.callback_metrics if k.startswith("train/loss_"))

    moves = []  # (caller, device) of every Teacher.to: the teacher must end the set-up on the CPU
    real_to = Teacher.to

    def recording_to(self, device):
        import inspect

        moves.append((inspect.stack()[1].function, str(device)))
        return real_to(self, device)

    monkeypatch.setattr(Teacher, "to", recording_to)
    cache_dir = tmp_path / "shared_cache"
    common = [*TINY_DAV2_TEACHER, "distill.epsilon=0.25", f"distill.cache_dir={cache_dir}",
              "loss.terms={l1: 0.1, ssim: 1.0}", "train.log_every_n_steps=1"]
    r1 = train({}, _run_overrides(tmp_path, "first", *common), callbacks=[Inspect()])
    assert r1.global_step == 2
    # to the training device for the fill, then back to the CPU; nothing moves it back afterwards
    assert [m[0] for m in moves] == ["_train_with_teacher", "_train_with_teacher"] and moves[-1][1] == "cpu"
    assert calls.n == 1  # the fill: 4 training images in one teacher batch (teacher_batch_size 8)
    n_files = len(list(cache_dir.glob("*.npy")))
    assert n_files == 4
    assert seen["teacher_in_batch"] and not seen["in_optimiser"]
    assert all(g is None for g in seen["grads"]) and not any(seen["requires_grad"])
    assert {"train/loss_kd", "train/loss_student"} <= set(seen["loss_terms"])
    ckpt = torch.load(r1.lightning_checkpoint, map_location="cpu", weights_only=True)
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
    from depthlab.models.registry import create_model

    student = create_model("unet", base_channels=4)
    assert len(ckpt["state_dict"]) == len(student.state_dict())

    calls.n = 0
    train({}, _run_overrides(tmp_path, "second", *common))
    assert calls.n == 0  # everything came from the cache
    assert len(list(cache_dir.glob("*.npy"))) == n_files


def test_uncached_distillation_with_zoo_teacher_runs_teacher_every_step(tmp_path, monkeypatch):
    from depthlab.config import load_config
    from depthlab.training import train

    calls = CountCalls(monkeypatch)
    ov = _run_overrides(tmp_path, "uncached", "distill.teacher=fastdepth", "distill.teacher_pretrained=false",
                        "distill.epsilon=0.5", "distill.cache=false")
    r = train({}, ov)
    assert r.global_step == 2 and calls.n == 2  # one teacher pass per training step
    assert not (r.run_dir / "teacher_cache").exists()
    cfg = load_config({}, ov)
    teacher, cache = build_distillation(cfg, tmp_path)
    assert cache is None and teacher.kind == "metric"
    assert build_distillation(load_config({}, ["distill.teacher=fastdepth", "distill.epsilon=0"]), tmp_path) \
        == (None, None)


def test_teacher_input_size_goes_where_the_registry_declares():
    from tiny_models import TINY_MARIGOLD

    # a zoo model is resized by the Predictor ...
    zoo = Teacher("fastdepth", pretrained=False, input_size=(64, 96))
    assert zoo.predictor.input_size == (64, 96) and zoo.identity(30, 40)["input_size"] == [64, 96]
    # ... Marigold by its own processing_resolution (longest side), which is then part of the cache identity
    tiny = {"config_overrides": TINY_MARIGOLD, "num_inference_steps": 1}
    small, large = (Teacher("marigold_depth", pretrained=False, input_size=n, kwargs=tiny) for n in (32, 64))
    assert (small.model.processing_resolution, large.model.processing_resolution) == (32, 64)
    assert small.predictor.input_size is None
    assert small.identity(40, 52) != large.identity(40, 52)
    assert small.identity(40, 52)["kwargs"]["processing_resolution"] == 32
    with pytest.raises(ValueError, match="longest side: give teacher_input_size as one integer"):
        Teacher("marigold_depth", pretrained=False, input_size=(64, 96), kwargs=tiny)
    # a module that resizes itself but declares no size keyword: the size cannot be honoured, so it is refused
    with pytest.raises(ValueError, match="resizes images itself and declares no size keyword"):
        Teacher(model=small.model, input_size=48)
