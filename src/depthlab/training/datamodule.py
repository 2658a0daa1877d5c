"""``DepthDataModule``: depthlab datasets + transforms behind a deterministic, resumable data order.

Determinism and exact resume rest on three small pieces:

* :class:`SeededSampler` -- the epoch's order is ``randperm(n, seed + epoch)``, sharded across
  ranks like ``DistributedSampler`` (padded to a multiple of the world size). It yields
  ``(index, epoch)`` keys and can start part-way into an epoch.
* :class:`SeededDataset` -- runs the wrapped dataset (and its random transforms) under torch /
  numpy / python RNGs seeded from ``(seed, epoch, index)`` and restores the caller's RNGs
  afterwards. A sample's augmentation therefore depends on nothing else (not on the number of
  workers, on prefetching, or on where a run was interrupted), and loading data never disturbs the
  RNG that the model uses (dropout).
* :class:`ResumableDataLoader` -- a ``DataLoader`` with ``state_dict``/``load_state_dict``
  (Lightning's ``_Stateful`` protocol). Lightning stores that state in every checkpoint and
  restores it before creating the iterator, so a resumed run skips the batches it already trained
  on and continues with the same order.
"""
from __future__ import annotations

import contextlib
import warnings
import random
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, index)``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """Seed torch (CPU), numpy and ``random`` for the block; restore the previous states after it."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class SeededDataset(Dataset):
    """Wraps a dataset whose ``__getitem__`` may be random; indexed by ``(index, epoch)`` keys.

    A plain integer key means epoch 0 (validation, inspection).
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        with seeded_rngs(sample_seed(self.seed, epoch, index)):
            return self.dataset[index]


class SeededSampler(Sampler):
    """Deterministic per-epoch order, sharded over ``num_replicas`` ranks, resumable mid-epoch.

    Each epoch: ``perm = randperm(n, generator seeded with seed + epoch)`` (or ``arange`` when
    ``shuffle=False``), padded by wrapping around to a multiple of ``num_replicas`` (``pad=True``;
    validation uses ``pad=False`` so no sample is counted twice), then ``perm[rank::num_replicas]``.
    ``start`` skips that many of this rank's indices in the next iteration only.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, num_replicas: int = 1,
                 pad: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.num_replicas = num_replicas
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at every epoch start
        self.epoch = int(epoch)

    def indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.num_replicas > 1 and self.n % self.num_replicas:
            extra = self.num_replicas - self.n % self.num_replicas
            order += (order * (extra // max(self.n, 1) + 1))[:extra]
        return order[self.rank::self.num_replicas]

    def __len__(self) -> int:
        if self.pad:
            return -(-self.n // self.num_replicas)
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self.start = 0
        for index in self.indices(epoch)[start:]:
            yield (index, epoch)


class ResumableDataLoader(DataLoader):
    """``DataLoader`` over a :class:`SeededSampler` whose position is saved in checkpoints.

    ``state_dict()`` = ``{"epoch", "batches"}``: the epoch being iterated and the number of batches
    already handed out in it. Lightning fetches sized training loaders without prefetching, so
    "handed out" equals "trained on" when a checkpoint is written at a batch end.
    """

    def __init__(self, dataset, *, sampler: SeededSampler, batch_size: int, **kwargs):
        super().__init__(dataset, sampler=sampler, batch_size=batch_size, **kwargs)
        self._epoch = sampler.epoch
        self._batches = 0

    def __iter__(self):
        sampler: SeededSampler = self.sampler  # type: ignore[assignment]
        self._epoch = sampler.epoch
        self._batches = sampler.start // self.batch_size
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batches": self._batches, "seed": self.sampler.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler: SeededSampler = self.sampler  # type: ignore[assignment]
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):  # saved at the end of an epoch: continue with the next one
            epoch, batches = epoch + 1, 0
        sampler.set_epoch(epoch)
        sampler.start = batches * self.batch_size
        self._epoch, self._batches = epoch, batches


def collate_samples(samples: Sequence[dict]) -> dict[str, Any]:
    """Stack ``image``/``depth``/``mask`` (and any other tensor of equal shape); ``meta`` stays a list."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "meta":
            out[key] = values
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


class EnsureSize:
    """Resize a sample to ``size`` ``(H, W)`` when it is not that size already (so batches stack).

    Runs after the configured transforms; uses :class:`depthlab.data.transforms.Resize` (bilinear
    image, nearest depth and mask).
    """

    def __init__(self, size):
        self.size = (int(size[0]), int(size[1]))
        self._resize = None

    def __call__(self, sample: dict) -> dict:
        if tuple(sample["image"].shape[-2:]) == self.size:
            return sample
        if self._resize is None:
            from depthlab.data.transforms import Resize

            self._resize = Resize(size=self.size)
        return self._resize(sample)

    def __repr__(self) -> str:
        return f"EnsureSize(size={self.size})"


def _base_items(ds) -> tuple[Any, set[str]] | None:
    """(root, names) of the files behind a (possibly wrapped) depthlab dataset, or None."""
    indices = None
    while ds is not None and not hasattr(ds, "names"):
        if isinstance(ds, Subset):
            indices = [ds.indices[i] for i in indices] if indices is not None else list(ds.indices)
        ds = getattr(ds, "dataset", None)
    if ds is None or getattr(ds, "root", None) is None:
        return None  # e.g. synthetic scenes: no files, splits are seeded apart
    names = list(ds.names)
    return ds.root, {names[i] for i in indices} if indices is not None else set(names)


def _warn_if_shared(train_set, val_set, val_split: str) -> None:
    """Warn when training and validation read the same files (a folder without splits serves every split)."""
    a, b = _base_items(train_set), _base_items(val_set)
    if a and b and a[0] == b[0]:
        shared = a[1] & b[1]
        if shared:
            warnings.warn(f"training and validation share {len(shared)} of {len(b[1])} images in {b[0]} (the "
                          f"dataset has no separate {val_split!r} split): validation numbers are not held-out",
                          stacklevel=2)


def pipeline_normalization(data_cfg) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) of a ``Normalize`` in the data pipelines, or None. Train and val must agree."""
    from depthlab.data.transforms import Normalize, build_transforms

    found = []
    for spec, train in ((data_cfg.train_transforms, True), (data_cfg.val_transforms, False)):
        norms = [t for t in build_transforms(spec or [], train=train) if isinstance(t, Normalize)]
        found.append((tuple(norms[-1].mean), tuple(norms[-1].std)) if norms else None)
    if found[0] != found[1] and data_cfg.val_split:
        raise ValueError(f"data.train_transforms normalises with {found[0]} but data.val_transforms with {found[1]}; "
                         "use the same Normalize in both, or none (the task then normalises with the model's "
                         "depth_info mean/std)")
    return found[0]


def _loader_generator(seed: int) -> torch.Generator:
    # DataLoader draws its workers' base seed from this generator instead of the global RNG,
    # so creating an iterator never moves the RNG that training uses.
    return torch.Generator().manual_seed(int(seed))


class DepthDataModule(L.LightningDataModule):
    """Train / val / test loaders for a :class:`depthlab.config.DataConfig`.

    ``create_dataset(cfg.dataset, root=cfg.root, split=..., transform=..., **cfg.kwargs)`` with the
    transforms of ``build_transforms(cfg.train_transforms | cfg.val_transforms)`` followed by
    :class:`EnsureSize` (``cfg.size``); a dataset whose constructor takes ``size`` gets ``cfg.size``.
    ``limit_train`` / ``limit_val`` keep the first N samples. The train order
    is seeded by ``seed`` and sharded by the trainer's rank and world size (Lightning's own
    distributed sampler is switched off in :func:`depthlab.training.train.build_trainer`).

    ``teacher_cache`` (a :class:`depthlab.training.distill.TeacherCache`): in ``setup("fit")`` the
    teacher's predictions on the un-augmented training images are computed once (rank 0, the others
    wait) and every training sample gets ``sample["teacher"]`` before the training transforms.
    """

    def __init__(self, data_cfg, seed: int = 0, teacher_cache=None):
        super().__init__()
        self.cfg = data_cfg
        self.seed = int(seed)
        self.teacher_cache = teacher_cache
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- datasets -----------------------------------------------------------------------------
    def transforms(self, train: bool):
        """``build_transforms(data.train_transforms | data.val_transforms)`` then :class:`EnsureSize`."""
        from depthlab.data.transforms import Compose, build_transforms

        spec = self.cfg.train_transforms if train else self.cfg.val_transforms
        pipeline = build_transforms(spec, train=train)
        return Compose([*pipeline, EnsureSize(self.cfg.size)])

    def _dataset(self, split: str | None, train: bool, limit: int | None, raw: bool = False) -> Dataset | None:
        """The split's dataset with its transforms (``raw=True``: without any)."""
        if not split:
            return None
        from depthlab.data import create_dataset, dataset_accepts

        kwargs, size = dict(self.cfg.kwargs), self.cfg.size
        if "size" not in kwargs and dataset_accepts(self.cfg.dataset, "size"):
            kwargs["size"] = tuple(int(s) for s in size)  # e.g. synthetic scenes render at that size
        ds = create_dataset(self.cfg.dataset, root=self.cfg.root, split=split,
                            transform=None if raw else self.transforms(train), **kwargs)
        if limit:
            ds = Subset(ds, range(min(int(limit), len(ds))))
        return ds

    def _train_with_teacher(self) -> Dataset:
        """Raw training samples; cache filled once; teacher map attached before the transforms."""
        from depthlab.training.distill import WithTeacher

        raw = self._dataset(self.cfg.train_split, True, self.cfg.limit_train, raw=True)
        trainer = getattr(self, "trainer", None)
        cache = self.teacher_cache
        if trainer is not None:
            cache.teacher.to(trainer.strategy.root_device)
        if trainer is None or trainer.is_global_zero:
            cache.fill(raw)
        if trainer is not None:
            trainer.strategy.barrier("depthlab-teacher-cache")
        # filled: the teacher is only needed for a rare miss (in a DataLoader worker, on the CPU), so its
        # weights leave the accelerator to the student
        cache.teacher.to("cpu")
        return WithTeacher(raw, cache, self.transforms(True))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            if self.teacher_cache is not None:
                self.train_set = self._train_with_teacher()
            else:
                self.train_set = self._dataset(self.cfg.train_split, True, self.cfg.limit_train)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._dataset(self.cfg.val_split, False, self.cfg.limit_val)
            if stage in (None, "fit") and self._rank_world()[0] == 0:
                _warn_if_shared(self.train_set, self.val_set, self.cfg.val_split)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._dataset(self.cfg.test_split, False, None)

    # -- loaders ------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        rank, world = self._rank_world()
        workers = self.cfg.num_workers
        batch_size = int(self.cfg.batch_size)
        sampler = SeededSampler(len(ds), seed=self.seed, shuffle=train, rank=rank, num_replicas=world, pad=train)
        common = dict(num_workers=workers, collate_fn=collate_samples, pin_memory=torch.cuda.is_available(),
                      generator=_loader_generator(self.seed + rank))
        if train:  # drop a ragged last batch (batch norm on one sample) unless it is the only one
            return ResumableDataLoader(SeededDataset(ds, self.seed), sampler=sampler, batch_size=batch_size,
                                       drop_last=len(sampler) >= batch_size, **common)
        return DataLoader(SeededDataset(ds, self.seed), sampler=sampler, batch_size=batch_size, **common)

    def train_dataloader(self) -> ResumableDataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, train=False) if self.val_set is not None else []

    def test_dataloader(self):
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set, train=False) if self.test_set is not None else []
