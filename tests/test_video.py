"""depthlab.video: clip in -> depth video / per-frame PNG16 / npz out, streaming; smoothing and flicker."""
from __future__ import annotations

import csv
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

av = pytest.importorskip("av")

from depthlab.models.registry import WeightsInfo  # noqa: E402
from depthlab.predictor import Predictor  # noqa: E402
from depthlab.video import (FlickerMeter, TemporalSmoother, flicker, iter_frames, predict_video,  # noqa: E402
                            predict_videos, video_info)

H, W = 48, 64


def make_clip(path, n=12, h=H, w=W, fps=12, noise=6.0, jumps=0.0, seed=0):
    """A static horizontal ramp, encoded with H.264; per-frame Gaussian noise (grey levels) and per-frame
    global brightness jumps (uniform in +-``jumps`` levels)."""
    rng = np.random.default_rng(seed)
    base = np.tile(np.linspace(40, 210, w)[None, :, None], (h, 1, 3))
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    for _ in range(n):
        f = base + rng.normal(0, noise, base.shape) + rng.uniform(-jumps, jumps)
        for p in s.encode(av.VideoFrame.from_ndarray(np.clip(f, 0, 255).astype(np.uint8), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


class Grey(nn.Module):
    """A relative model whose output follows the image's brightness: shifts with it, like a relative
    model's per-frame shift ambiguity."""

    def forward(self, x):
        return {"depth": x.mean(1, keepdim=True) * 3 + 1}


def grey_predictor(**kw):
    model = Grey()
    model.depth_info = WeightsInfo(output_kind="relative", multiple_of=8)
    return Predictor(model, **kw)


@pytest.fixture(scope="module")
def fastdepth():
    return Predictor("fastdepth", input_size=(64, 64), batch_size=4)


def count_frames(path):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), frames[0].shape


def test_predict_video_all_formats(tmp_path, fastdepth):
    clip = make_clip(tmp_path / "clip.mp4")
    calls = []
    rep = predict_video(clip, fastdepth, tmp_path / "o", formats="color,side,png16,npy",
                        progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 12) for i in range(1, 13)]  # progress in frames, once per frame
    assert rep.n_frames == 12 and rep.kind == "metric" and rep.fps == pytest.approx(12)
    assert count_frames(tmp_path / "o" / "clip_color.mp4") == (12, (H, W, 3))
    assert count_frames(tmp_path / "o" / "clip_side.mp4") == (12, (H, 2 * W, 3))
    z = np.load(tmp_path / "o" / "clip_depth.npz")
    assert z["depth"].shape == (12, H, W) and z["depth"].dtype == np.float32
    np.testing.assert_allclose(z["time_s"], np.arange(12) / 12, atol=1e-6)
    # the npz holds exactly what the Predictor gives for the decoded frames
    frames = [torch.from_numpy(rgb).permute(2, 0, 1) for rgb, _ in iter_frames(clip)]
    np.testing.assert_array_equal(z["depth"], np.stack(fastdepth.predict_batches(frames)))
    # per-frame 16-bit PNGs in millimetres
    from PIL import Image

    folder = tmp_path / "o" / "clip_depth16"
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(12)]
    mm = np.asarray(Image.open(pngs[5])).astype(np.float64)
    np.testing.assert_allclose(mm * 0.001, z["depth"][5], atol=0.0005 + 1e-6)
    side = json.loads((tmp_path / "o" / "clip_video.json").read_text())
    assert side["n_frames"] == 12 and side["png16_unit"] == "mm" and side["flicker"] == pytest.approx(rep.flicker)
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]  # no temp files left


def test_relative_png16_per_frame_range(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", n=5)
    rep = predict_video(clip, grey_predictor(), tmp_path / "o", formats=["png16", "npz"], max_frames=3)
    assert rep.n_frames == 3
    from PIL import Image

    d = np.load(tmp_path / "o" / "c_depth.npz")["depth"]
    with open(tmp_path / "o" / "c_depth16" / "frames.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for i, row in enumerate(rows):
        v = np.asarray(Image.open(tmp_path / "o" / "c_depth16" / row["file"])).astype(np.float64)
        lo, hi = float(row["png16_min"]), float(row["png16_max"])
        np.testing.assert_allclose(lo + (v - 1) / 65534 * (hi - lo), d[i], atol=1e-4)


def test_flicker_meter_hand_value():
    # changes 1 then 2 -> mean 1.5; mean |d| over all pixels (0 + 1 + 3) / 3 = 4/3 -> 1.125
    frames = [np.full((2, 3), v, np.float32) for v in (0.0, 1.0, 3.0)]
    assert flicker(frames) == pytest.approx(1.125)
    m = FlickerMeter()
    m.update(np.ones((2, 2)))
    assert m.value == 0.0  # one frame: no change yet


def test_smoother_alignment_and_ema_by_hand():
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 5, (6, 7)).astype(np.float32)
    aligned = TemporalSmoother(0.5)
    outs = [aligned(s * base + t) for s, t in [(1, 0), (2, 3), (0.5, -0.2)]]
    for o in outs:  # every frame is an exact scale/shift of the first: the output stays the first frame
        np.testing.assert_allclose(o, base, atol=1e-5)
    ema = TemporalSmoother(0.25, align=False)
    ema(base)
    np.testing.assert_allclose(ema(base + 4), base + 1, atol=1e-6)  # 0.25 * (base + 4) + 0.75 * base
    with pytest.raises(ValueError, match="smooth must be in"):
        TemporalSmoother(1.5)


def test_smoothing_reduces_flicker_on_static_clip(tmp_path):
    clip = make_clip(tmp_path / "s.mp4", n=16, noise=8.0, jumps=20.0)
    raw = predict_video(clip, grey_predictor(), tmp_path / "raw", formats="npz")
    ema = predict_video(clip, grey_predictor(), tmp_path / "ema", formats="npz", smooth=0.3, align=False)
    smooth = predict_video(clip, grey_predictor(), tmp_path / "smooth", formats="npz", smooth=0.3)
    assert raw.flicker == raw.flicker_raw == pytest.approx(smooth.flicker_raw)
    assert smooth.align is True and ema.align is False
    # measured: raw 0.0585, EMA only 0.0116, aligned + EMA 0.0040
    assert smooth.flicker < 0.3 * raw.flicker
    assert smooth.flicker < 0.5 * ema.flicker  # the alignment removes the per-frame shift the EMA only damps
    d = np.load(tmp_path / "smooth" / "s_depth.npz")["depth"]
    np.testing.assert_array_equal(d[0], np.load(tmp_path / "raw" / "s_depth.npz")["depth"][0])  # frame 0 starts it
    assert flicker(d) == pytest.approx(smooth.flicker)


def test_memory_stays_flat(tmp_path, fastdepth):
    short, long = make_clip(tmp_path / "a.mp4", n=8), make_clip(tmp_path / "b.mp4", n=48)
    predict_video(short, fastdepth, tmp_path / "o", formats="color,png16,npz", smooth=0.5)  # one-time imports
    peaks = []
    for clip in (short, long):
        tracemalloc.start()
        predict_video(clip, fastdepth, tmp_path / "o", formats="color,png16,npz", smooth=0.5)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    frame_bytes = H * W * (4 + 3 + 3)  # one depth frame + RGB + colour
    # holding the extra 40 frames would add >= 40 * frame_bytes (1.2 MB); allow a quarter of that (measured:
    # 8 KB more)
    assert peaks[1] - peaks[0] < 10 * frame_bytes, peaks


def test_unreadable_clip_is_one_line_and_writes_nothing(tmp_path, fastdepth):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    from depthlab.errors import DataError

    with pytest.raises(DataError, match=r"bad\.mp4: cannot open video"):
        predict_video(bad, fastdepth, tmp_path / "o")
    good = make_clip(tmp_path / "good.mp4", n=2)
    rep = predict_videos([bad, good], fastdepth, tmp_path / "o", formats="npz")
    assert rep.n_ok == 1 and list(rep.failures) == [str(bad)]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good_depth.npz", "good_video.json"]
    (tmp_path / "again").mkdir()
    again = make_clip(tmp_path / "again" / "good.mp4", n=2)  # same stem: outputs must not overwrite each other
    rep = predict_videos([good, again], fastdepth, tmp_path / "o2", formats="npz")
    assert [Path(f).name for f in rep.outputs[str(again)]] == ["good_mp4_depth.npz", "good_mp4_video.json"]


def test_failure_mid_clip_leaves_no_partial_outputs(tmp_path):
    class Breaks(nn.Module):
        calls = 0

        def forward(self, x):
            Breaks.calls += 1
            if Breaks.calls == 3:
                raise RuntimeError("boom")
            return {"depth": x.mean(1, keepdim=True)}

    model = Breaks()
    model.depth_info = WeightsInfo(output_kind="relative", multiple_of=8)
    clip = make_clip(tmp_path / "c.mp4", n=5)
    with pytest.raises(RuntimeError, match="boom"):  # a bug keeps its traceback
        predict_video(clip, Predictor(model), tmp_path / "o", formats="color,png16,npz")
    assert list((tmp_path / "o").iterdir()) == []


def test_missing_pyav_names_the_extra(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from depthlab.cli import app

    clip = make_clip(tmp_path / "c.mp4", n=2)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'depthlab\[video\]'"):
        video_info(clip)
    r = CliRunner().invoke(app, ["predict", str(clip), "--model", "fastdepth", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "depthlab[video]" in r.output and "Traceback" not in r.output


def test_cli_predicts_a_clip(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    clip = make_clip(tmp_path / "c.mp4", n=4)
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["predict", str(clip), "--model", "fastdepth", "--input-size", "64x64",
                                 "--formats", "color,npy", "--smooth", "0.5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["c_color.mp4", "c_depth.npz", "c_video.json"]
    assert json.loads((out / "c_video.json").read_text())["smooth"] == 0.5
    assert video_info(out / "c_color.mp4").n_frames == 4
    r = CliRunner().invoke(app, ["predict", str(clip), "--model", "fastdepth", "--formats", "tiff", "--out", str(out)])
    assert r.exit_code == 2 and "unknown output format(s) ['tiff']; choose from color, side, png16, npz" in r.output


def test_colour_range_per_frame_or_running():
    from depthlab.video import COLOR_RANGE_EMA, _Colorizer
    from depthlab.viz import colorize

    d = np.linspace(1, 5, H * W, dtype=np.float32).reshape(H, W)
    same = lambda a, b: (a != b).any(axis=-1).mean() < 0.01  # colormap bins: a boundary pixel may round apart
    per_frame = _Colorizer("relative", "Spectral_r", consistent=False)  # raw relative: each frame its own range
    assert same(per_frame(d), per_frame(2 * d + 1))
    running = _Colorizer("metric", "Spectral_r", consistent=True)
    assert same(running(d), colorize(d, reverse=True))  # the first frame: its own 2-98 percentile range
    lo, hi = np.percentile(d, (2, 98))
    shift = COLOR_RANGE_EMA * 1.0  # the next frame is 1 m farther: the range moves by a tenth of that
    assert same(running(d + 1), colorize(d + 1, vmin=lo + shift, vmax=hi + shift, reverse=True))
    assert not same(running(d + 1), colorize(d + 1, reverse=True))  # a third frame: still behind its own range


def test_mp4_writer_pads_odd_sizes(tmp_path):
    from depthlab.video import mp4_writer

    frame = np.full((47, 63, 3), 128, np.uint8)
    frame[:, -1] = 250  # the last column is repeated into the padding
    with mp4_writer(tmp_path / "odd.mp4", fps=5) as write:
        for _ in range(3):
            write(frame)
    n, shape = count_frames(tmp_path / "odd.mp4")
    assert (n, shape) == (3, (48, 64, 3))
    with av.open(str(tmp_path / "odd.mp4")) as c:
        back = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert abs(back[20, 30] - 128).max() <= 3 and abs(back[20, 63] - 250).max() <= 6
