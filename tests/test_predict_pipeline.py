"""predict_files' reader/writer pools: same bytes and order as one worker, one-line skips, overlap, bounded queues."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch.nn as nn
from PIL import Image

import depthlab.predictor as predictor_mod
from depthlab.models.registry import WeightsInfo
from depthlab.predictor import predict_files


class Toy(nn.Module):
    """Depth = 1 + 3 * red channel: cheap and input-dependent."""

    def forward(self, x):
        return {"depth": x[:, :1] * 3 + 1}


def _model():
    m = Toy()
    m.depth_info = WeightsInfo(output_kind="metric", multiple_of=8)
    return m


def _folder(tmp_path, n=9, bad=(4,)):
    """n small images of two sizes (so batches break on size), some corrupt ones in the middle."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        p = folder / f"im{i:02d}.png"
        if i in bad:
            p.write_bytes(b"\x89PNG\r\n\x1a\n broken")
            continue
        h, w = (24, 32) if i % 3 else (16, 40)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
    return folder


def _files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_pooled_outputs_equal_one_worker_byte_for_byte_in_input_order(tmp_path):
    folder = _folder(tmp_path, n=9, bad=(2, 6))
    fmts = "npy,png16,color,side"
    serial = predict_files([folder], model=_model(), out_dir=tmp_path / "w1", formats=fmts, batch_size=2, io_workers=1)
    pooled = predict_files([folder], model=_model(), out_dir=tmp_path / "w4", formats=fmts, batch_size=2, io_workers=4)
    assert serial.n_ok == pooled.n_ok == 7
    assert _files(tmp_path / "w1") == _files(tmp_path / "w4")  # every file, predictions.json included
    stems = [f"im{i:02d}" for i in range(9) if i not in (2, 6)]
    sidecar = json.loads((tmp_path / "w4" / "predictions.json").read_text())
    assert list(sidecar["files"]) == stems
    assert list(pooled.outputs) == [str(folder / f"{s}.png") for s in stems]
    assert list(pooled.failures) == [str(folder / "im02.png"), str(folder / "im06.png")]
    assert all("cannot decode" in r and "\n" not in r for r in pooled.failures.values())


def test_a_failing_write_in_the_middle_is_skipped_with_its_reason(tmp_path, monkeypatch):
    folder = _folder(tmp_path, n=6, bad=(1,))
    real = predictor_mod.write_outputs

    def flaky(pred, rgb, stem, **kw):
        if stem == "im03":
            raise OSError("disk full\nsecond line")
        return real(pred, rgb, stem=stem, **kw)

    monkeypatch.setattr(predictor_mod, "write_outputs", flaky)
    rep = predict_files([folder], model=_model(), out_dir=tmp_path / "o", formats="npy", io_workers=3)
    assert rep.n_ok == 4
    assert list(rep.failures) == [str(folder / "im01.png"), str(folder / "im03.png")]  # input order
    assert rep.failures[str(folder / "im03.png")] == "writing outputs failed (OSError: disk full)"
    assert sorted(p.name for p in (tmp_path / "o").glob("*.npy")) == ["im00.npy", "im02.npy", "im04.npy", "im05.npy"]
    assert not list((tmp_path / "o").glob(".*tmp"))


def test_writes_overlap_and_queues_stay_bounded(tmp_path, monkeypatch):
    """Slow writes (sleeping, so no CPU is needed) run side by side; at most 2 * io_workers wait unwritten."""
    folder = _folder(tmp_path, n=12, bad=())
    real, lock = predictor_mod.write_outputs, threading.Lock()
    state = {"predicted": 0, "written": 0, "max_waiting": 0}
    real_predict = predictor_mod.Predictor.predict_batches

    def counting_predict(self, tensors):
        out = real_predict(self, tensors)
        with lock:
            state["predicted"] += len(out)
            state["max_waiting"] = max(state["max_waiting"], state["predicted"] - state["written"])
        return out

    def slow(pred, rgb, stem, **kw):
        time.sleep(0.15)
        files = real(pred, rgb, stem=stem, **kw)
        with lock:
            state["written"] += 1
        return files

    monkeypatch.setattr(predictor_mod, "write_outputs", slow)
    monkeypatch.setattr(predictor_mod.Predictor, "predict_batches", counting_predict)
    t0 = time.perf_counter()
    rep = predict_files([folder], model=_model(), out_dir=tmp_path / "o", formats="npy", io_workers=4)
    wall = time.perf_counter() - t0
    assert rep.n_ok == 12
    assert wall < 12 * 0.15 * 0.6, f"{wall:.2f} s: writes did not overlap"  # serial would take >= 1.8 s
    assert state["max_waiting"] <= 2 * 4 + 1


def test_sidecar_rewrites_back_off_when_they_get_slow(monkeypatch):
    """At most once a second, and at most 5 % of the time: a rewrite that takes 2 s waits 40 s for the next."""
    import time

    from depthlab.predictor import _throttled

    now, calls = [0.0], []
    monkeypatch.setattr(time, "monotonic", lambda: now[0])

    def write():  # a sidecar write taking 0.01 s, then (a big folder) 2 s
        calls.append(now[0])
        now[0] += 0.01 if len(calls) < 3 else 2.0

    save = _throttled(write, seconds=1.0)
    for _ in range(1000):
        save()
        now[0] += 0.1  # one image per 0.1 s
    # cheap writes: 1 s after the previous one ended; then 2 s writes, each >= 40 s after the previous ended
    assert calls[:3] == pytest.approx([0.0, 1.01, 2.02], abs=1e-6)
    gaps = [b - a for a, b in zip(calls[2:], calls[3:])]
    assert gaps and min(gaps) >= 40.0 and len(calls) < 8


def test_io_workers_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="io_workers"):
        predict_files([_folder(tmp_path, n=1, bad=())], model=_model(), out_dir=tmp_path / "o", io_workers=0)
