"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted run."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from lightning.pytorch.callbacks import Callback
    from depthlab.training import train

    class Slow(Callback):  # gives the parent time to kill us in the middle of the run
        def __init__(self, seconds):
            self.seconds = seconds
        def on_train_batch_end(self, *args):
            time.sleep(self.seconds)

    cfg = json.load(open(sys.argv[1]))
    resume, sleep = sys.argv[2] == "1", float(sys.argv[3])
    train(cfg, ["train.checkpoint_every_n_steps=3"], resume=resume, callbacks=[Slow(sleep)] if sleep else [])
""")

BATCHES_PER_EPOCH = 8  # 32 samples / batch 4
EPOCHS = 3


def _config(out: Path) -> dict:
    return {
        "name": "tiny", "output_dir": str(out),
        "model": {"name": "unet", "kwargs": {"base_channels": 4}},
        "data": {"dataset": "synthetic", "size": [32, 32], "batch_size": 4, "kwargs": {"n": 32},
                 "train_transforms": ["random_horizontal_flip", {"color_jitter": {"brightness": 0.2}}],
                 "limit_val": 8},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "scheduler": "cosine", "warmup_steps": 2,
                  "min_lr": 1e-4},
        "train": {"max_epochs": EPOCHS, "accelerator": "cpu", "devices": 1, "deterministic": True, "seed": 11,
                  "loggers": ["csv"], "gradient_clip_val": 1.0},
    }


def _launch(tmp_path: Path, out: Path, resume: bool, sleep: float) -> subprocess.Popen:
    cfg_file = out.with_suffix(".json")
    cfg_file.write_text(json.dumps(_config(out)))
    script = tmp_path / "resume_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEPTHLAB_NO_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(cfg_file), "1" if resume else "0", str(sleep)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 180) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    victim = _launch(tmp_path, killed_dir, resume=False, sleep=0.25)
    reference = _launch(tmp_path, reference_dir, resume=False, sleep=0.0)
    last = killed_dir / "tiny" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 150
    while not last.exists():
        assert victim.poll() is None, victim.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(0.3)  # into the next steps, past the checkpoint
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    step = ckpt["global_step"]
    assert 0 < step < BATCHES_PER_EPOCH * EPOCHS and step % BATCHES_PER_EPOCH != 0, f"not mid-epoch: step {step}"
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": step // BATCHES_PER_EPOCH,
                                                                      "batches": step % BATCHES_PER_EPOCH, "seed": 11}]
    assert not (killed_dir / "tiny" / "last.safetensors").exists()

    _finish(_launch(tmp_path, killed_dir, resume=True, sleep=0.0))
    _finish(reference)

    resumed = load_file(killed_dir / "tiny" / "last.safetensors")
    uninterrupted = load_file(reference_dir / "tiny" / "last.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    different = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert not different, f"resumed weights differ from the uninterrupted run: {different[:5]}"

    a = torch.load(killed_dir / "tiny" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(reference_dir / "tiny" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == BATCHES_PER_EPOCH * EPOCHS
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sb)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == BATCHES_PER_EPOCH * EPOCHS
    assert a["lr_schedulers"][0]["_last_lr"] == b["lr_schedulers"][0]["_last_lr"]
    assert a["depthlab"]["val_metrics"]["rmse"] == b["depthlab"]["val_metrics"]["rmse"]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from depthlab.training import train

    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(_config(tmp_path), resume=True)


# --------------------------------------------------------------------------- the pieces, in process
def test_sampler_order_is_seeded_sharded_and_resumable():
    from depthlab.training.datamodule import ResumableDataLoader, SeededSampler

    s = SeededSampler(10, seed=5)
    e0, e0_again = list(s), list(SeededSampler(10, seed=5))
    assert e0 == e0_again and sorted(i for i, _ in e0) == list(range(10))
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in e0] and all(ep == 1 for _, ep in s)
    # two ranks: disjoint shards that cover everything (padded by wrapping)
    shards = [list(SeededSampler(9, seed=5, rank=r, num_replicas=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert {i for sh in shards for i, _ in sh} == set(range(9))

    class Keys:  # returns the (index, epoch) key it is asked for
        def __len__(self):
            return 20

        def __getitem__(self, key):
            return key

    def make():
        return ResumableDataLoader(Keys(), sampler=SeededSampler(20, seed=1), batch_size=4,
                                   collate_fn=lambda keys: [i for i, _ in keys])

    loader = make()
    loader.sampler.set_epoch(2)
    full = list(loader)
    it = iter(loader)
    first = [next(it), next(it)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2, "seed": 1}
    fresh = make()
    fresh.load_state_dict(state)
    assert first + list(fresh) == full
    assert fresh.state_dict()["batches"] == 5
    # a checkpoint written at the end of an epoch continues with the next epoch
    fresh.load_state_dict({"epoch": 2, "batches": 5, "seed": 1})
    loader.sampler.set_epoch(3)
    assert list(fresh) == list(loader)


def test_augmentation_depends_only_on_seed_epoch_index_and_leaves_global_rng_alone():
    from depthlab.training.datamodule import SeededDataset

    class Noisy:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3).tolist() + [float(np.random.rand()), random.random()]

    ds = SeededDataset(Noisy(), seed=0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = ds[(2, 1)]
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    assert ds[(2, 1)] == a
    assert ds[(2, 2)] != a and ds[(3, 1)] != a
    assert SeededDataset(Noisy(), seed=1)[(2, 1)] != a


def test_rng_state_callback_round_trip():
    from depthlab.training.callbacks import RngStateCallback

    cb = RngStateCallback()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    state = cb.state_dict()
    expected = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(42)
    restored = RngStateCallback()
    restored.load_state_dict(state)

    class _T:
        global_rank = 0

    restored.on_train_start(_T(), None)
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
