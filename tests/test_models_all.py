"""Every registered model: forward shapes at a few sizes, finite output, backward, checkpoint round trip.

The model list is read at collection time (``depthlab.list_models()``), so a new family is tested as
soon as it registers. Per-model hooks (tiny variants, sizes, slow marks, no-backward) live in
tests/tiny_models.py, never in library code (a test below checks that).

Default sizes: the smallest multiple of the model's ``multiple_of`` that is >= 64, square and
non-square (64x64 and 64x96 for multiple_of 8, 16 or 32).
"""
from __future__ import annotations

import importlib
import math

import pytest
import torch

import depthlab
from depthlab.checkpoint import load_checkpoint, save_checkpoint
from depthlab.models.registry import get_entry

import tiny_models  # noqa: E402  (tests/ is on sys.path)

MODELS = depthlab.list_models()


def _hooks(name: str) -> tuple[dict, bool, list[tuple[int, int]] | None]:
    return dict(tiny_models.TEST_KWARGS.get(name, {})), name in tiny_models.TEST_SLOW, tiny_models.TEST_SIZES.get(name)


def test_model_families_hold_no_test_hooks():
    """Test-only hooks (TEST_KWARGS, TINY_* configs, ...) belong in tests/tiny_models.py."""
    families = {get_entry(name).family for name in MODELS}
    stray = {f"{f}.{n}" for f in families for n in vars(importlib.import_module(f))
             if n.startswith(("TEST_", "TINY_", "_TINY_"))}
    assert not stray, f"move these to tests/tiny_models.py: {sorted(stray)}"


def default_sizes(multiple_of: int) -> list[tuple[int, int]]:
    """Square and non-square sizes, multiples of ``multiple_of``, >= 64 px."""
    m = max(1, int(multiple_of))
    h = m * math.ceil(64 / m)
    return [(h, h), (h, h + m * math.ceil(32 / m))]


def _params():
    out = []
    for name in MODELS:
        _, slow, _ = _hooks(name)
        out.append(pytest.param(name, id=name, marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.fixture(scope="module", params=_params())
def built(request):
    """(name, model, sizes, kwargs); module scope + params groups the tests by model (one build each)."""
    name = request.param
    kwargs, _, sizes = _hooks(name)
    torch.manual_seed(0)
    model = depthlab.create_model(name, **kwargs)
    sizes = sizes or default_sizes(model.depth_info.multiple_of)
    yield name, model, sizes, kwargs
    del model


def _images(size, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=g)


def test_forward_shape_and_finite(built):
    name, model, sizes, _ = built
    model.eval()
    with torch.no_grad():
        for size in sizes:
            out = model(_images(size))
            assert isinstance(out, dict) and "depth" in out, f"{name}: forward must return a dict with 'depth'"
            depth = out["depth"]
            assert depth.shape == (2, 1, *size), f"{name} at {size}: got {tuple(depth.shape)}"
            assert depth.dtype == torch.float32
            assert torch.isfinite(depth).all(), f"{name} at {size}: non-finite output"


def test_backward_gives_finite_nonzero_grads(built):
    name, model, sizes, _ = built
    if name in tiny_models.TEST_NO_BACKWARD:
        pytest.skip(f"{name}: declared TEST_NO_BACKWARD (forward is not differentiable by design)")
    model.train()
    model.zero_grad(set_to_none=True)
    depth = model(_images(sizes[-1], seed=1))["depth"]
    (depth ** 2).mean().backward()
    grads = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad]
    assert grads, f"{name}: no trainable parameters"
    with_grad = [(n, g) for n, g in grads if g is not None]
    assert with_grad, f"{name}: no parameter received a gradient"
    for n, g in with_grad:
        assert torch.isfinite(g).all(), f"{name}: non-finite gradient for {n}"
    assert any(g.abs().sum() > 0 for _, g in with_grad), f"{name}: all gradients are zero"
    model.zero_grad(set_to_none=True)


def test_checkpoint_round_trip_is_identical(built, tmp_path):
    name, model, sizes, kwargs = built
    model.eval()
    x = _images(sizes[0], seed=2)
    with torch.no_grad():
        expected = model(x)["depth"]
    path = save_checkpoint(model, tmp_path / f"{name}.safetensors", metrics={"test": 1.0})
    loaded = load_checkpoint(path)
    assert loaded.model_name == name and loaded.model_args == kwargs
    assert loaded.depth_info == model.depth_info
    assert not loaded.training
    with torch.no_grad():
        got = loaded(x)["depth"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
