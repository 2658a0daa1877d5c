"""Issue #14: no data loss, bounded memory, every bad input a one-line error (one test per defect)."""
from __future__ import annotations

import json
import os
import zlib
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from depthlab import io
from depthlab.errors import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid-looking 8-bit grayscale PNG declaring ``width x height`` whose IDAT is tiny (it is truncated):
    only its header matters -- a reader that decodes before checking the size allocates width*height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def rgb(path: Path, size=(40, 32)) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def tiny_model():
    import depthlab

    return depthlab.create_model("fastdepth", pretrained=False)


def digest(folder: Path) -> dict[str, bytes]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).digest() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- 1. data loss
def test_predict_into_the_input_folder_never_overwrites_an_input(tmp_path):
    from depthlab.predictor import predict_files

    for name in ("a.png", "a_color.png", "a_depth16.png"):
        rgb(tmp_path / name)
    before = digest(tmp_path)
    report = predict_files(tmp_path, model=tiny_model(), out_dir=tmp_path, formats="npy,png16,color")
    after = digest(tmp_path)
    assert all(after[k] == v for k, v in before.items())  # no input modified
    assert "overwrite the input" in report.failures[str(tmp_path / "a.png")]
    assert report.n_ok == 2 and (tmp_path / "a_color.npy").exists()


# ---------------------------------------------------------------- 2. memory bounded by the input
def test_pixel_bomb_refused_from_the_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 9500, 9500)
    assert bomb.stat().st_size < 20_000
    with pytest.raises(io.ImageTooLargeError, match=r"bomb.png: image is 9500x9500 \(90.2 MP\).*--max-pixels"):
        io.read_rgb(bomb)
    with pytest.raises(io.ImageTooLargeError, match="above the 0.001 MP limit"):
        io.read_rgb(rgb(tmp_path / "small.png"), max_pixels=1000)
    assert io.read_rgb(tmp_path / "small.png", max_pixels=40 * 32).shape == (3, 32, 40)


def test_predict_files_skips_a_bomb_and_keeps_going(tmp_path):
    from depthlab.predictor import predict_files

    png_bomb(tmp_path / "bomb.png", 9500, 9500)
    rgb(tmp_path / "ok.png")
    report = predict_files(tmp_path, model=tiny_model(), out_dir=tmp_path / "out", formats="npy")
    assert report.n_ok == 1 and "9500x9500" in report.failures[str(tmp_path / "bomb.png")]


# ---------------------------------------------------------------- 5. hangs
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_is_skipped_when_listed_and_refused_when_named(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    rgb(tmp_path / "ok.png")
    assert io.list_images(tmp_path) == [tmp_path / "ok.png"]
    assert io.list_images(str(tmp_path / "*.png")) == [tmp_path / "ok.png"]
    with pytest.raises(DataError, match="pipe.png: not a regular file"):
        io.read_rgb(tmp_path / "pipe.png")  # would block forever in open() before the fix
    with pytest.raises(DataError, match="not a regular file"):
        io.read_depth(tmp_path / "pipe.png", 0.001)


# ---------------------------------------------------------------- 10. ground truth that is not depth
@pytest.mark.parametrize("array", [np.ones((4, 5), bool), np.ones((4, 5), np.complex64), np.zeros((0, 5), np.float32)])
def test_non_depth_npy_refused(tmp_path, array):
    np.save(tmp_path / "d.npy", array)
    with pytest.raises(DataError, match="d.npy: (depth must hold real numbers|empty array)"):
        io.read_depth(tmp_path / "d.npy")


@pytest.mark.parametrize("mode", ["P", "1"])
def test_palette_and_bilevel_depth_png_refused(tmp_path, mode):
    Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5)).convert(mode).save(tmp_path / "d.png")
    with pytest.raises(DataError, match=f"mode '{mode}'"):
        io.read_depth(tmp_path / "d.png", 0.001)
    Image.fromarray(np.arange(20, dtype=np.uint16).reshape(4, 5) * 1000).save(tmp_path / "ok.png")
    assert io.read_depth(tmp_path / "ok.png", 0.001)[0, 1] == pytest.approx(1.0)


def test_npy_bomb_refused_from_the_header(tmp_path):
    path = tmp_path / "big.npy"
    with open(path, "wb") as f:  # header declares 20000x20000 float32 (1.6 GB); the data is absent
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (20000, 20000)})
    with pytest.raises(io.ImageTooLargeError, match=r"big.npy: array of shape \(20000, 20000\)"):
        io.read_depth(path)


# ---------------------------------------------------------------- 11. smaller
def test_long_file_name_atomic_write(tmp_path):
    path = tmp_path / ("x" * 245 + ".npy")  # 249 characters: valid, its temp file must be too
    io.write_npy(path, np.zeros((2, 2)))
    assert np.load(path).shape == (2, 2) and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_same_file_under_several_spellings_listed_once(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    rgb(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    assert io.list_images(["a.png", "./a.png", "d/../a.png", str(tmp_path / "a.png")]) == [Path("a.png")]


def test_predict_exit_status_is_one_on_partial_failure(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    good = rgb(tmp_path / "ok.png")
    for i in range(3):
        (tmp_path / f"bad{i}.png").write_bytes(b"not a png")
    r = CliRunner().invoke(app, ["predict", str(good), *(str(tmp_path / f"bad{i}.png") for i in range(3)),
                                 "--model", "fastdepth", "--out", str(tmp_path / "out")])
    assert r.exit_code == 1, r.output


def test_predict_out_is_a_file_is_one_line(tmp_path):
    from depthlab.predictor import predict_files

    (tmp_path / "taken").write_text("x")
    with pytest.raises(DataError, match="taken: output folder expected, but a file"):
        predict_files(rgb(tmp_path / "a.png"), model=tiny_model(), out_dir=tmp_path / "taken")


# ---------------------------------------------------------------- 6 / 9. weight files and checkpoint headers
def rewrite_header(src: Path, dst: Path, **changes) -> Path:
    """Copy a depthlab checkpoint with header fields replaced (what a tampered file looks like)."""
    from safetensors.torch import load_file, save_file
    from depthlab.checkpoint import read_checkpoint

    _, meta = read_checkpoint(src)
    meta.update(changes)
    save_file(load_file(str(src)), str(dst), metadata={"depthlab": json.dumps(meta)})
    return dst


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory):
    from depthlab import create_model, save_checkpoint

    return save_checkpoint(create_model("unet", base_channels=4), tmp_path_factory.mktemp("ck") / "u.safetensors")


@pytest.mark.parametrize("content,match", [
    (b"", "empty weight file"),
    (b"garbage!" * 10, "cannot read weights"),
    (None, "not a state dict of tensors"),  # torch.save(1)
])
def test_bad_pth_is_one_line_naming_the_file(tmp_path, content, match):
    from depthlab import create_model
    from depthlab.models.weights import WeightsError

    import torch

    (tmp_path / "w.pth").write_bytes(content) if content is not None else torch.save(1, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=f"w.pth: {match}"):
        create_model("fastdepth", checkpoint_path=tmp_path / "w.pth")


def test_malicious_pickle_runs_nothing(tmp_path):
    import pickle

    from depthlab import create_model
    from depthlab.models.weights import WeightsError

    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(WeightsError, match="evil.pth: cannot read weights"):
        create_model("fastdepth", checkpoint_path=tmp_path / "evil.pth")
    assert not marker.exists()


def test_wrong_architecture_and_truncated_checkpoint(tmp_path, unet_ckpt):
    from depthlab import create_model, load_checkpoint
    from depthlab.models.weights import WeightsError

    with pytest.raises(WeightsError, match="u.safetensors: weights do not match"):
        create_model("unet", base_channels=8, checkpoint_path=unet_ckpt)
    (tmp_path / "t.safetensors").write_bytes(unet_ckpt.read_bytes()[:200])
    with pytest.raises(WeightsError, match="t.safetensors: cannot read checkpoint"):
        load_checkpoint(tmp_path / "t.safetensors")


@pytest.mark.parametrize("args,match", [
    ({"base_channels": 100000}, "do not match its tensors"),  # ~360 GB if built before checking
    ({"base_channels": 4, "checkpoint_path": "/etc/hostname"}, "may not set 'checkpoint_path'"),
    ({"base_channels": 4, "bogus": 1}, "do not fit unet"),
])
def test_checkpoint_header_model_args_not_trusted(tmp_path, unet_ckpt, args, match):
    from depthlab import load_checkpoint
    from depthlab.models.weights import WeightsError

    bad = rewrite_header(unet_ckpt, tmp_path / "h.safetensors", model_args=args)
    with pytest.raises(WeightsError, match=f"h.safetensors: .*{match}"):
        load_checkpoint(bad)


@pytest.mark.parametrize("device,match", [("bogus", "unknown device 'bogus'"), ("cuda:99", "unavailable")])
def test_bad_device_is_one_line(device, match):
    from depthlab.errors import DepthlabError
    from depthlab.predictor import Predictor

    with pytest.raises(DepthlabError, match=match):
        Predictor(tiny_model(), device=device)


# ---------------------------------------------------------------- 2 / 3. web app
@pytest.fixture(scope="module")
def web():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from depthlab.web.app import DepthService, create_app

    return TestClient(create_app(service=DepthService.build(tiny_model())))


def _png_bytes(size=(40, 32)) -> bytes:
    import io as _pyio

    buf = _pyio.BytesIO()
    Image.new("RGB", size, (90, 120, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fmt,suffix", [("npy", ".npy"), ("png16", "_depth16.png")])
def test_web_non_ascii_and_path_upload_names(web, fmt, suffix):
    from urllib.parse import quote

    r = web.post(f"/api/predict?format={fmt}", files={"file": ("Łódź 深度.png", _png_bytes(), "image/png")})
    assert r.status_code == 200  # was a 500: latin-1 header
    cd = r.headers["content-disposition"]
    assert cd.startswith("attachment; filename=\"") and f"filename*=UTF-8''{quote('Łódź 深度' + suffix)}" in cd
    r = web.post(f"/api/predict?format={fmt}", files={"file": ("../../x.png", _png_bytes(), "image/png")})
    assert r.status_code == 200 and "../" not in r.headers["content-disposition"]
    assert f'filename="x{suffix}"' in r.headers["content-disposition"]


def test_web_pixel_bomb_is_413_from_the_header(tmp_path):
    from fastapi.testclient import TestClient

    from depthlab.web.app import create_app

    web = TestClient(create_app(model=tiny_model(), max_pixels=100_000))
    bomb = png_bomb(tmp_path / "bomb.png", 9500, 9500).read_bytes()
    r = web.post("/api/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 413 and "bomb.png: image is 9500x9500" in r.json()["detail"]
    r = web.post("/api/predict", files={"file": ("big.png", _png_bytes((400, 300)), "image/png")})
    assert r.status_code == 413 and "above the 0.1 MP limit" in r.json()["detail"]


def test_web_bounds_concurrent_decodes(monkeypatch):
    import threading
    import time

    from depthlab.web import app as web_app

    svc = web_app.DepthService.build(tiny_model(), max_decodes=2)
    active, peak, lock = [0], [0], threading.Lock()
    real = web_app.decode_upload

    def slow_decode(data, name, max_pixels=None):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return real(data, name, max_pixels)

    monkeypatch.setattr(web_app, "decode_upload", slow_decode)
    threads = [threading.Thread(target=svc.predict_upload, args=(_png_bytes((40 + i, 32)), f"{i}.png")) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert peak[0] == 2


# ---------------------------------------------------------------- 5 / 7 / 8. training and config
@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "", ".", "a/b"])
def test_run_name_stays_inside_output_dir(tmp_path, name):
    from depthlab.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="name: must be a plain folder name"):
        load_config({"name": name, "output_dir": str(tmp_path)})


def test_too_many_cpu_devices_is_an_error_not_a_hang():
    from types import SimpleNamespace

    from depthlab.config import ConfigError
    from depthlab.training.train import _check_cpu_devices

    with pytest.raises(ConfigError, match="train.devices: 64 CPU processes"):
        _check_cpu_devices(SimpleNamespace(accelerator="cpu", devices=64, num_nodes=1))
    _check_cpu_devices(SimpleNamespace(accelerator="cpu", devices=2, num_nodes=1))


def test_non_finite_loss_stops_training():
    import torch

    from depthlab.config import load_config
    from depthlab.errors import DepthlabError
    from depthlab.training import DepthTask

    task = DepthTask(load_config({"model": {"name": "unet", "kwargs": {"base_channels": 4}},
                                  "data": {"dataset": "synthetic", "size": [32, 32]}}))
    task.compute_loss = lambda raw, batch: (torch.tensor(float("nan")), {})
    batch = {"image": torch.rand(2, 3, 32, 32), "depth": torch.rand(2, 1, 32, 32), "mask": torch.ones(2, 1, 32, 32, dtype=bool)}
    with pytest.raises(DepthlabError, match="training diverged: the loss is nan at step 0"):
        task.training_step(batch, 0)


def test_data_opt_alias_bomb_refused():
    from typer.testing import CliRunner

    from depthlab.cli import app

    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" \
           "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]"
    r = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--predictions", ".", "--data-opt", f"x={bomb}"])
    assert r.exit_code == 2 and "--data-opt" in r.output and "Traceback" not in r.output
    assert "aliases expand to more than" in r.output  # refused for the bomb, not for an unknown option


# ---------------------------------------------------------------- 4 / 6 / 8 / 10. evaluation
def folder_dataset(root: Path, names=("a", "b", "c", "d"), gt=None) -> Path:
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    for n in names:
        rgb(root / "rgb" / f"{n}.png", (8, 6))
        np.save(root / "depth" / f"{n}.npy", np.full((6, 8), 2.0, np.float32) if gt is None else gt)
    return root


def test_bad_prediction_files_are_skipped_and_the_json_written(tmp_path):
    from depthlab.evaluation.runner import evaluate

    ds = folder_dataset(tmp_path / "ds")
    pred = tmp_path / "pred"
    pred.mkdir()
    np.save(pred / "a.npy", np.full((6, 8), 2.0, np.float32))
    np.save(pred / "b.npy", np.zeros((0,), np.float32))  # zero-size: raised in resize_to before
    for n in ("c", "d"):
        Image.fromarray(np.full((6, 8), 2000, np.uint16)).save(pred / f"{n}_depth16.png")
    (pred / "predictions.json").write_text(
        '{"output_kind": "metric", "files": {"c": {"kind": "metric", "png16_scale": [0.001]},'
        ' "d": {"kind": "metric", "png16_scale": 1e400}}}')
    out = tmp_path / "r.json"
    result = evaluate("folder", root=ds, predictions=pred, out=out)
    assert result["summary"]["n_images"] == 1 and result["per_image"]["a"]["abs_rel"] == pytest.approx(0.0)
    skipped = json.loads(out.read_text())["skipped"]
    assert "b.npy: empty array" in skipped["b"]
    assert "c_depth16.png: scale nan" in skipped["c"] and "d_depth16.png: scale" in skipped["d"]


def test_eval_out_is_a_folder_fails_before_evaluating(tmp_path, monkeypatch):
    from depthlab.evaluation import runner

    monkeypatch.setattr(runner, "get_protocol", lambda p: pytest.fail("evaluated first"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match="dir: output file expected, but it is a folder"):
        runner.evaluate("folder", root=tmp_path, predictions=tmp_path, out=tmp_path / "dir")


def test_index_csv_rows_stay_inside_the_dataset(tmp_path):
    from depthlab.data import create_dataset

    ds = folder_dataset(tmp_path / "ds", names=("a",))
    (tmp_path / "secret.npy").write_bytes((ds / "depth" / "a.npy").read_bytes())
    (ds / "index.csv").write_text("name,rgb,depth\na,rgb/a.png,depth/a.npy\nx,/etc/hostname,\n"
                                  "y,rgb/a.png,../secret.npy\n")
    d = create_dataset("folder", root=ds)
    assert d[0]["depth"].shape == (1, 6, 8)
    for i in (1, 2):
        with pytest.raises(DataError, match="index.csv: row .* outside the dataset folder"):
            d[i]
    assert create_dataset("folder", root=ds, allow_outside_root=True)[2]["depth"].shape == (1, 6, 8)


def test_index_csv_follows_a_symlinked_folder_inside_the_dataset(tmp_path):
    """rgb/ as a link to another disk is part of the dataset (the check is on the CSV's text, not the real path)."""
    from depthlab.data import create_dataset

    ds = folder_dataset(tmp_path / "ds", names=("a",))
    (ds / "rgb").rename(tmp_path / "elsewhere")
    (ds / "rgb").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (ds / "index.csv").write_text("name,rgb,depth\na,rgb/a.png,depth/a.npy\n")
    assert create_dataset("folder", root=ds)[0]["depth"].shape == (1, 6, 8)


def test_sample_name_with_dotdot_does_not_reach_prediction_lookup(tmp_path):
    from depthlab.evaluation.runner import evaluate

    ds = folder_dataset(tmp_path / "ds", names=("a",))
    (ds / "index.csv").write_text("name,rgb,depth\n../../leak,rgb/a.png,depth/a.npy\n")
    (tmp_path / "leak.npy").write_bytes((ds / "depth" / "a.npy").read_bytes())
    pred = tmp_path / "p" / "q"
    pred.mkdir(parents=True)
    result = evaluate("folder", root=ds, predictions=pred)
    assert result["summary"]["n_images"] == 0 and "not a plain relative name" in result["skipped"]["../../leak"]


@pytest.mark.parametrize("gt", [np.ones((6, 8), bool), np.full((6, 8), 2 + 0j, np.complex64)])
def test_non_depth_ground_truth_is_skipped_not_scored(tmp_path, gt):
    from depthlab.evaluation.runner import evaluate

    ds = folder_dataset(tmp_path / "ds", names=("a",), gt=gt)
    pred = tmp_path / "pred"
    pred.mkdir()
    np.save(pred / "a.npy", np.full((6, 8), 2.0, np.float32))
    result = evaluate("folder", root=ds, predictions=pred)
    assert result["summary"]["n_images"] == 0 and "real numbers" in result["skipped"]["a"]


@pytest.mark.parametrize("size", ["0", "-5", "0x10"])
def test_input_size_zero_or_negative_is_a_usage_error(tmp_path, size):
    from typer.testing import CliRunner

    from depthlab.cli import app

    r = CliRunner().invoke(app, ["predict", str(rgb(tmp_path / "a.png")), "--model", "fastdepth", "--input-size", size,
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "--input-size must be" in r.output and not (tmp_path / "out").exists()


def test_a_killed_writers_temp_file_is_removed_by_the_next_run(tmp_path):
    """SIGKILL leaves ``.<name>.<8 chars>.tmp`` behind (nothing can run on SIGKILL): the next predict into the
    same folder removes such files once they are older than io.ORPHAN_TEMP_AGE_S, and leaves fresh ones."""
    import time

    from depthlab.predictor import predict_files

    out = tmp_path / "out"
    out.mkdir()
    orphan = out / ".a_depth16.png.k3j9_x2Q.tmp"
    orphan.write_bytes(b"")
    old = time.time() - io.ORPHAN_TEMP_AGE_S - 5
    os.utime(orphan, (old, old))
    fresh = out / ".b.npy.Zz81abcd.tmp"            # a live writer's file: too young to touch
    fresh.write_bytes(b"x")
    keep = out / ".notes.tmp"                        # not an atomic_path name
    keep.write_bytes(b"")
    os.utime(keep, (old, old))
    img = Path(__file__).resolve().parents[1] / "src/depthlab/assets/samples/nyu/rgb"
    first = sorted(img.iterdir())[0]
    predict_files([first], model="fastdepth", out_dir=out, formats="npy", input_size=[64, 64])
    assert not orphan.exists() and fresh.exists() and keep.exists()
    other = out / ".c.npy.Qq81abcd.tmp"
    other.write_bytes(b"x")
    assert io.remove_orphan_temps(out, min_age_s=0, of=["c.npy"]) == [other]  # only the named outputs' temps
    assert io.remove_orphan_temps(out, min_age_s=0) == [fresh]
