"""One prediction pipeline for every model: pre-process -> network -> post-process.

A :class:`Processor` owns a model's image side; the network between is any callable ``x -> raw (B,1,h,w)``
(the model, its ONNX Runtime backend, a bf16 autocast wrapper). ``preprocess``: geometry (:meth:`~Processor.fit`
to :meth:`~Processor.network_size`), float in [0,1], :func:`normalize` by ``depth_info.mean/std``.
``postprocess``: raw output at the network size, :func:`~depthlab.types.decode_target` into the declared unit,
geometry undone (:meth:`~Processor.restore`). The default :class:`Processor` pads to ``multiple_of`` (or resizes
to ``input_size``); a foundation adapter's ``processor()`` returns an :class:`AdapterProcessor` that sizes images
like its transformers/diffusers image processor. Shared pieces: :func:`normalize`, :func:`resize_to`,
:func:`to_float01`, :func:`batches_by_size`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence, TypeVar

import torch
import torch.nn.functional as F

from depthlab.errors import InputError
from depthlab.types import decode_target

PAD_MODES = ("replicate", "reflect", "constant")
T = TypeVar("T")


def to_float01(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0,255] -> float32 / 255; anything else -> float32 as is."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def normalize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor,
              std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel of a float ``(...,3,H,W)`` tensor (torchvision's ``normalize``);
    ``mean``/``std``: 3 numbers, or tensors that broadcast against ``x`` (e.g. ``(1,3,1,1)`` buffers)."""
    from torchvision.transforms.v2.functional import normalize as tv_normalize

    return tv_normalize(x, *(v if torch.is_tensor(v) else [float(c) for c in v] for v in (mean, std)))


def resize_to(x: torch.Tensor, size: Sequence[int], mode: str = "bilinear", antialias: bool = False) -> torch.Tensor:
    """``(B,C,h,w)`` -> ``(B,C,H,W)`` for ``size = (..., H, W)`` with ``mode`` (``align_corners=False``);
    ``x`` itself when it already has that size."""
    size = tuple(int(s) for s in size[-2:])
    if tuple(x.shape[-2:]) == size:
        return x
    kw = {"align_corners": False, "antialias": antialias} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, size=size, mode=mode, **kw)


def batches_by_size(items: Iterable[T], batch_size: int,
                    image: Callable[[T], torch.Tensor] = lambda t: t) -> Iterator[list[T]]:
    """Consecutive ``items`` whose ``image(item)`` has the same shape and dtype, at most ``batch_size`` per
    list (order kept): what can be stacked into one batch."""
    batch: list[T] = []
    key: tuple | None = None
    for item in items:
        t = image(item)
        k = (tuple(t.shape), t.dtype)
        if batch and (k != key or len(batch) >= batch_size):
            yield batch
            batch = []
        batch.append(item)
        key = k
    if batch:
        yield batch


def padded_size(size: Sequence[int], multiple_of: int | None) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``multiple_of``: the default processor's network size at native size."""
    return tuple(-(-int(s) // int(multiple_of or 1)) * int(multiple_of or 1) for s in size)


def _round_to(v: float, m: int) -> int:
    return max(m, int(round(v / m)) * m)


class Geometry(NamedTuple):
    """What ``postprocess`` needs to bring a prediction back: input size, network size, undo data."""

    size: tuple[int, int]
    network: tuple[int, int]
    undo: Any = None


class Processor:
    """The default processor, from the model's :class:`~depthlab.models.registry.WeightsInfo`: ``input_size``
    None = pad to ``multiple_of`` (cropped away after); an int = short side, ``(H, W)`` = that size (rounded to
    ``multiple_of``; resized back after)."""

    keeps_uint8 = False  # 8-bit images reach fit() as uint8 (transformers' processors resize them so)
    normalize_first = False  # normalise before fit() (Depth Pro's processor), not after

    def __init__(self, info, input_size: int | tuple[int, int] | None = None, pad_mode: str = "replicate"):
        self.info, self.input_size, self.pad_mode = info, input_size, pad_mode

    def network_size(self, h: int, w: int) -> tuple[int, int]:
        """The (H, W) the network sees for an ``h x w`` input."""
        m = int(self.info.multiple_of or 1)
        if self.input_size is None:
            return padded_size((h, w), m)
        if isinstance(self.input_size, int):
            s = self.input_size / min(h, w)
            return _round_to(h * s, m), _round_to(w * s, m)
        th, tw = self.input_size
        return _round_to(th, m), _round_to(tw, m)

    def fit(self, images: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, Any]:
        """Images -> ``size``; returns (images, undo data for :meth:`restore`)."""
        if self.input_size is not None:
            return resize_to(images, size, antialias=True), None
        h, w = images.shape[-2:]
        ph, pw = size[0] - h, size[1] - w
        if not (ph or pw):
            return images, None
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
        reflect_too_far = self.pad_mode == "reflect" and (ph >= h or pw >= w)  # reflect needs pad < size
        mode = "replicate" if reflect_too_far else self.pad_mode
        return F.pad(images, pad, mode=mode), pad

    def restore(self, depth: torch.Tensor, size: tuple[int, int], undo: Any) -> torch.Tensor:
        """Depth at the network size -> the input ``size`` (undo :meth:`fit`)."""
        if undo is not None:
            left, _, top, _ = undo
            return depth[..., top: top + size[0], left: left + size[1]]
        return resize_to(depth, size)

    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
        """``(B,3,H,W)`` uint8 or float in [0,1] -> (normalised network input, :class:`Geometry`)."""
        if not (self.keeps_uint8 and images.dtype == torch.uint8):
            images = to_float01(images)
        size = tuple(images.shape[-2:])
        network = tuple(self.network_size(*size))
        if self.normalize_first:
            x, undo = self.fit(normalize(to_float01(images), self.info.mean, self.info.std), network)
            return x, Geometry(size, network, undo)
        x, undo = self.fit(images, network)
        return normalize(to_float01(x), self.info.mean, self.info.std), Geometry(size, network, undo)

    def postprocess(self, raw: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        """Raw network output ``(B,1,h,w)`` -> ``(B,1,H,W)`` float32 in the declared unit."""
        raw = resize_to(raw.float(), geometry.network)  # a model predicting at a lower resolution
        depth = decode_target(raw, self.info.target_encoding, self.info.max_depth)
        depth = self.restore(depth, geometry.size, geometry.undo)
        return resize_to(depth, geometry.size).contiguous()  # a restore that leaves the size to the caller

    def __call__(self, images: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """pre-process -> ``network`` -> post-process: images ``(B,3,H,W)`` -> depth ``(B,1,H,W)``."""
        x, geometry = self.preprocess(images)
        return self.postprocess(network(x), geometry)


class AdapterProcessor(Processor):
    """The processor of a model that sizes images like its transformers/diffusers image processor:
    ``network_size(h, w)``, ``resize_image(images, size)`` (8-bit images arrive as uint8, resized as 8-bit data
    like transformers' processors do) and ``resize_depth(depth, size)``; each optional (default: no resizing; a
    size mismatch left is resized bilinearly). Marigold and ZoeDepth, whose forward resizes, pass none.
    ``normalize_first``: normalise before ``resize_image`` (images resized as floats), as Depth Pro's does."""

    keeps_uint8 = True

    def __init__(self, info, network_size: Callable[[int, int], Sequence[int]] | None = None,
                 resize_image: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = None,
                 resize_depth: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = None,
                 normalize_first: bool = False):
        super().__init__(info)
        self._network_size, self._resize_image, self._resize_depth = network_size, resize_image, resize_depth
        self.normalize_first = normalize_first

    def network_size(self, h: int, w: int) -> tuple[int, int]:
        return tuple(int(v) for v in self._network_size(h, w)) if self._network_size else (h, w)

    def fit(self, images: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, Any]:
        same = tuple(images.shape[-2:]) == tuple(size)
        return (images if same or self._resize_image is None else self._resize_image(images, size)), None

    def restore(self, depth: torch.Tensor, size: tuple[int, int], undo: Any) -> torch.Tensor:
        return depth if self._resize_depth is None else self._resize_depth(depth, size)


class ProcessorMixin:
    """For models with their own ``processor()``: :meth:`preprocess`, for code that calls the network itself."""

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` (or ``(3,H,W)``) uint8 or float in [0,1] -> the normalised network input."""
        return self.processor().preprocess(images if images.ndim == 4 else images[None])[0]


def has_own_processor(model) -> bool:
    """Whether ``model`` brings its own processor (a ``processor()`` method: the foundation adapters)."""
    return callable(getattr(model, "processor", None))


def processor_for(model, input_size: int | tuple[int, int] | None = None, pad_mode: str = "replicate") -> Processor:
    """The model's own processor (``model.processor()``), else the default one from ``model.depth_info``."""
    if pad_mode not in PAD_MODES:
        raise InputError(f"pad_mode must be replicate, reflect or constant, got {pad_mode!r}")
    if not has_own_processor(model):
        return Processor(model.depth_info, input_size, pad_mode)
    if input_size is not None:
        name = getattr(model, "model_name", None) or type(model).__name__
        raise InputError(
            f"{name} resizes images itself (like its transformers/diffusers processor), so input_size must be "
            f"None; build it with create_model({name!r}, input_size=...) to change the processing size")
    return model.processor()


__all__ = ["Processor", "AdapterProcessor", "ProcessorMixin", "Geometry", "processor_for", "has_own_processor",
           "normalize", "resize_to", "to_float01", "batches_by_size", "padded_size", "PAD_MODES"]
