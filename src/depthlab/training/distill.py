"""Knowledge distillation from a frozen teacher, with the teacher's predictions cached on disk.

Pieces (the loss itself is :func:`depthlab.losses.distillation_loss`):

* :class:`Teacher` -- any zoo model or foundation adapter (``create_model(name, ...)``), frozen
  (no gradients, eval mode) and run through a :class:`depthlab.predictor.Predictor`, so its output
  is ``(B,1,H,W)`` in its declared unit (``kind``: metric | relative | disparity) at the input
  size. It is *not* a submodule of the task: never in the optimiser, never in a checkpoint.
* :func:`teacher_to_encoding` -- the teacher's unit -> the student's target encoding (the rule is
  in ``docs/training.md``).
* :class:`TeacherCache` -- teacher predictions on the un-augmented training images at the
  dataset's resolution, one float16 ``.npy`` per image under ``<folder>/<key>.npy`` (written
  atomically) plus ``index.json``. The key is the SHA-1 of the image's float32 bytes together
  with the teacher identity (name, checkpoint, kwargs, a fingerprint of its weights) and the
  network input size, so a key is correct whatever the dataset does (a procedurally generated
  image hashes like any other). :meth:`TeacherCache.fill` computes the missing entries once
  before training (rich progress bar); :meth:`TeacherCache.get` computes and stores a miss on the
  fly.
* :class:`WithTeacher` -- dataset wrapper: raw sample -> ``sample["teacher"]`` from the cache ->
  the training transforms. The map is attached *before* the geometric transforms, which treat
  ``teacher`` as a dense key exactly like ``depth`` (flip, crop, rotation, resize); photometric
  transforms touch only ``image``.
* :func:`build_distillation` -- what :func:`depthlab.training.train.train` calls.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from depthlab.processing import batches_by_size, has_own_processor
from depthlab.types import encode_target

__all__ = ["TEACHER_KEY", "Teacher", "TeacherCache", "WithTeacher", "teacher_to_encoding", "distill_active",
           "build_distillation", "DISPARITY_FLOOR"]

TEACHER_KEY = "teacher"
DISPARITY_FLOOR = 1e-3
"""A disparity teacher's map is clamped to at least this fraction of its per-image maximum before
``1 / disparity`` (a depth student); caps the depth range at 1000:1 where the shift of an
affine-invariant disparity makes far pixels <= 0."""
FLOAT16_MAX = float(np.finfo(np.float16).max)


def distill_active(cfg) -> bool:
    """Whether an experiment config distils: ``distill.teacher`` set and ``distill.epsilon > 0``."""
    return bool(cfg.distill.teacher) and cfg.distill.epsilon > 0


def teacher_to_encoding(teacher: torch.Tensor, kind: str, encoding: str, max_depth: float) -> torch.Tensor:
    """Teacher prediction ``(B,1,H,W)`` in its declared unit -> the student's target encoding.

    * ``metric`` (metres) and ``relative`` (affine-invariant depth, e.g. Marigold: treated as
      depth): ``encode_target(teacher, encoding, max_depth)`` (values <= 0 become 0);
    * ``disparity`` (inverse depth up to scale and shift): used as is for an ``inverse`` student
      (the max-normalisation of the loss removes the scale); ``1 / disparity`` for a ``depth`` or
      ``normalized`` student, the disparity first clamped to ``DISPARITY_FLOOR`` times its
      per-image maximum.
    """
    teacher = teacher.float()
    if kind in ("metric", "relative"):
        return encode_target(teacher, encoding, max_depth)
    if kind != "disparity":
        raise ValueError(f"teacher output kind {kind!r}: expected metric, relative or disparity")
    if encoding == "inverse":
        return teacher
    if encoding not in ("depth", "normalized"):
        raise ValueError(f"unknown student target encoding {encoding!r}")
    peak = teacher.amax(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-12)
    return 1.0 / teacher.clamp_min(0).maximum(DISPARITY_FLOOR * peak)


def _weights_fingerprint(model: nn.Module) -> str:
    """SHA-1 of the model's state dict (names and raw bytes)."""
    h = hashlib.sha1()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = value.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Teacher:
    """A frozen depth model that predicts ``(B,1,H,W)`` in its declared unit for images in [0, 1].

    Built with ``create_model(name, pretrained, checkpoint_path, **kwargs)`` unless ``model`` (an
    ``nn.Module`` with ``depth_info``) is given. ``input_size`` as in :class:`Predictor`.
    ``calls`` counts the forward passes (batches) it has run.
    """

    def __init__(self, name: str | None = None, *, kwargs: dict | None = None, checkpoint: str | None = None,
                 pretrained: bool = True, input_size=None, batch_size: int = 8, device="cpu",
                 model: nn.Module | None = None):
        input_size = tuple(input_size) if isinstance(input_size, (list, tuple)) else input_size
        self.kwargs = dict(kwargs or {})
        self.input_size = input_size  # for the Predictor (models that do not resize images themselves)
        if model is None:
            if not name:
                raise ValueError("Teacher: give a model name or a model")
            model, size_kwarg = self._build(name, pretrained, checkpoint, self.kwargs, input_size)
            # the processing size is part of what a prediction depends on (cache keys, see identity())
            self.kwargs.update(size_kwarg)
        else:
            size_kwarg = {}
        if has_own_processor(model):
            if input_size is not None and not size_kwarg:
                raise ValueError(f"teacher {name or type(model).__name__} resizes images itself and declares no "
                                 "size keyword (registry resize_kwarg): set its size in teacher_kwargs and leave "
                                 "teacher_input_size unset")
            self.input_size = None  # a foundation adapter resizes itself (its size keyword)
        self.name = name or getattr(model, "model_name", None) or type(model).__name__
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.batch_size = int(batch_size)
        model.requires_grad_(False)
        self.model = model.eval()
        self.calls = 0
        self._fingerprint: str | None = None
        self._set_device(device)

    @staticmethod
    def _build(name, pretrained, checkpoint, kwargs: dict, input_size) -> tuple[nn.Module, dict]:
        """``create_model``; ``input_size`` goes to the model's own size keyword when the registry declares
        one (``resize_kwarg``: foundation adapters resize images themselves -- ``input_size`` for the
        transformers ones, ``processing_resolution``, the longest side, for Marigold), else to the Predictor."""
        from depthlab.models.registry import create_model, get_entry

        size_kw = get_entry(name).resize_kwarg
        applied = {}
        if input_size is not None and size_kw and size_kw not in kwargs:
            if size_kw == "processing_resolution" and not isinstance(input_size, int):
                raise ValueError(f"teacher {name} resizes by its longest side: give teacher_input_size as one "
                                 f"integer, not {list(input_size)}")
            applied = {size_kw: list(input_size) if isinstance(input_size, tuple) else input_size}
        build = dict(pretrained=bool(pretrained) and checkpoint is None, checkpoint_path=checkpoint, **kwargs)
        build.update({k: tuple(v) if isinstance(v, list) else v for k, v in applied.items()})
        return create_model(name, **build), applied

    @classmethod
    def from_config(cls, distill_cfg, device="cpu") -> "Teacher":
        """From a :class:`depthlab.config.DistillConfig`."""
        d = distill_cfg
        return cls(d.teacher, kwargs=d.teacher_kwargs, checkpoint=d.teacher_checkpoint,
                   pretrained=d.teacher_pretrained, input_size=d.teacher_input_size,
                   batch_size=d.teacher_batch_size, device=device)

    def _set_device(self, device) -> None:
        from depthlab.predictor import Predictor

        self.predictor = Predictor(self.model, device=device, input_size=self.input_size,
                                   batch_size=self.batch_size, backend="eager")  # training stays PyTorch
        self.model = self.predictor.model

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @property
    def kind(self) -> str:
        return self.predictor.kind

    def to(self, device) -> "Teacher":
        if torch.device(device) != self.device:
            self._set_device(device)
        return self

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` in [0, 1] -> ``(B,1,H,W)`` float32 in ``kind``'s unit, on the input's device
        (an ordinary tensor, usable in a loss)."""
        self.calls += 1
        self.model.eval()
        return self.predictor.predict_tensor(images).clone()

    def identity(self, height: int, width: int) -> dict[str, Any]:
        """What the prediction of an ``height x width`` image depends on besides its pixels."""
        if self._fingerprint is None:
            self._fingerprint = _weights_fingerprint(self.model)
        return {"teacher": self.name, "checkpoint": self.checkpoint, "kwargs": self.kwargs, "kind": self.kind,
                "input_size": list(self.predictor.network_size(int(height), int(width))),
                "weights_sha1": self._fingerprint}


class TeacherCache:
    """Teacher predictions keyed by image content; see the module docstring."""

    INDEX = "index.json"

    def __init__(self, folder, teacher: Teacher):
        self.folder = Path(folder)
        self.teacher = teacher
        self.hits = 0
        self.misses = 0
        self._identity: dict[tuple[int, int], bytes] = {}

    def key(self, image: torch.Tensor) -> str:
        """SHA-1 hex of the ``(3,H,W)`` image's float32 bytes + the teacher identity for its size."""
        h, w = image.shape[-2:]
        ident = self._identity.get((h, w))
        if ident is None:
            ident = json.dumps(self.teacher.identity(h, w), sort_keys=True, default=str).encode()
            self._identity[(h, w)] = ident
        d = hashlib.sha1(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        d.update(ident)
        return d.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def _read(self, key: str, shape) -> torch.Tensor | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:  # a damaged entry is recomputed, not fatal
            import warnings

            warnings.warn(f"{p}: unreadable teacher cache entry ({e}); recomputing")
            return None
        if tuple(arr.shape) != (1, *shape):
            return None
        return torch.from_numpy(arr.astype(np.float32))

    def _write(self, key: str, pred: torch.Tensor) -> None:
        from depthlab.io import atomic_write

        arr = pred.detach().cpu().float().numpy().clip(-FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
        with atomic_write(self.path(key)) as f:
            np.save(f, arr)

    def lookup(self, image: torch.Tensor) -> torch.Tensor | None:
        """The cached ``(1,H,W)`` float32 map of a ``(3,H,W)`` image, or None."""
        return self._read(self.key(image), image.shape[-2:])

    def get(self, image: torch.Tensor, name: str | None = None) -> torch.Tensor:
        """Cached map of ``image``; a miss runs the teacher on it and stores the result."""
        key = self.key(image)
        hit = self._read(key, image.shape[-2:])
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        pred = self.teacher.predict(image[None].float())[0].cpu()
        self._write(key, pred)
        self._update_index({key: {"name": name, "shape": list(image.shape[-2:])}})
        return self._read(key, image.shape[-2:])  # the stored (float16) values: cached and fresh agree

    def _update_index(self, entries: dict[str, dict]) -> None:
        """Merge entries into ``index.json`` (informative; the ``.npy`` files are the cache)."""
        from depthlab.io import write_json

        p = self.folder / self.INDEX
        index: dict[str, Any] = {}
        if p.is_file():
            try:
                index = json.loads(p.read_text())
            except (OSError, ValueError):
                index = {}
        index.setdefault("format", "depthlab teacher cache v1: <sha1>.npy float16 (1,H,W) in the teacher's unit")
        index["teacher"] = {k: v for k, v in self.teacher.identity(1, 1).items() if k != "input_size"}
        index.setdefault("entries", {}).update(entries)
        write_json(p, index)

    def fill(self, dataset: Dataset, progress: bool | None = None, batch_size: int | None = None) -> dict[str, int]:
        """Compute the missing entries for every sample of ``dataset`` (raw, un-augmented samples).

        Images of equal size share teacher batches of ``batch_size`` (default: the teacher's).
        Returns ``{"images", "computed", "cached"}``. ``progress=None``: a rich bar when stderr is
        a terminal.
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.folder.mkdir(parents=True, exist_ok=True)
        n = len(dataset)
        show = sys.stderr.isatty() if progress is None else bool(progress)
        counts, new_entries = {"computed": 0, "cached": 0}, {}

        def missing(advance):
            for i in range(n):
                sample = dataset[i]
                image = sample["image"].float()
                key = self.key(image)
                advance()
                if self.path(key).is_file():
                    counts["cached"] += 1
                    continue
                meta = sample.get("meta")
                yield key, image, meta.get("name") if isinstance(meta, dict) else None

        with Progress(TextColumn("teacher cache"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not show, transient=False) as bar:
            task = bar.add_task("fill", total=n)
            todo = missing(lambda: bar.advance(task))
            for batch in batches_by_size(todo, int(batch_size or self.teacher.batch_size), lambda e: e[1]):
                preds = self.teacher.predict(torch.stack([img for _, img, _ in batch]))
                for (key, img, name), pred in zip(batch, preds):
                    self._write(key, pred.cpu())
                    new_entries[key] = {"name": name, "shape": list(img.shape[-2:])}
                counts["computed"] += len(batch)
        computed, cached = counts["computed"], counts["cached"]
        if new_entries or not (self.folder / self.INDEX).is_file():
            self._update_index(new_entries)
        self.misses += computed
        self.hits += cached
        return {"images": n, "computed": computed, "cached": cached}


class WithTeacher(Dataset):
    """``dataset[i]`` (un-transformed) + ``sample["teacher"]`` from ``cache``, then ``transform``."""

    def __init__(self, dataset: Dataset, cache: TeacherCache, transform=None):
        self.dataset = dataset
        self.cache = cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        meta = sample.get("meta")
        name = meta.get("name") if isinstance(meta, dict) else None
        sample[TEACHER_KEY] = self.cache.get(sample["image"].float(), name=name)
        return self.transform(sample) if self.transform is not None else sample


def build_distillation(cfg, run_dir, device="cpu") -> tuple[Teacher | None, TeacherCache | None]:
    """(teacher, cache) for an experiment: ``(None, None)`` without distillation, ``(teacher, None)``
    with ``distill.cache: false``. The teacher is built under a forked RNG seeded with
    ``train.seed`` so that a randomly initialised teacher is reproducible and building it does not
    change the student's initialisation or the data order."""
    if not distill_active(cfg):
        return None, None
    d = cfg.distill
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        teacher = Teacher.from_config(d, device=device)
    if not d.cache:
        return teacher, None
    folder = d.cache_dir or Path(run_dir) / "teacher_cache"
    return teacher, TeacherCache(folder, teacher)

