"""Generate bad and odd inputs for the fault suite (issue #14): images, ground truth, predictions, weight
files, configs. Every generator writes into a folder and returns :class:`Case` s saying what each input is and
what depthlab must do with it: ``ok`` (processed), ``error`` (refused with one line naming it) or ``either``.

Malicious pickles would create a file in ``<root>/markers/`` if they ran; the suite asserts none appears.
"""
from __future__ import annotations

import io as _pyio
import json
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Case:
    path: Path
    what: str  # short description
    expect: str = "error"  # ok | error | either


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header declares ``width x height`` (8-bit grayscale); its pixel data is cut short."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (min(width, 100_000) + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _photo(w: int = 24, h: int = 18, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = _pyio.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


# ------------------------------------------------------------------------------------------------ images
def _odd_modes(photo: Image.Image) -> dict[str, tuple[bytes, str]]:
    """``{file name: (bytes, what)}`` of the same photo in unusual PIL modes (all readable)."""
    a = np.asarray(photo)
    modes = {"L": photo.convert("L"), "LA": photo.convert("LA"), "P": photo.convert("P"),
             "PRGBA": photo.convert("RGBA").convert("P"), "RGBA": photo.convert("RGBA"), "1": photo.convert("1"),
             "I16": Image.fromarray((a[..., 0].astype(np.uint16) * 257)),
             "I": photo.convert("I").point(lambda v: v * 200), "F": Image.fromarray(a[..., 0].astype(np.float32) / 255.0)}
    out = {}
    for mode, im in modes.items():
        ext = "tif" if mode in ("F", "I") else "png"
        out[f"mode_{mode}.{ext}"] = (_encoded(im, "TIFF" if ext == "tif" else "PNG"), f"mode {im.mode}")
    return out


def images(root: Path, markers: Path) -> list[Case]:
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def put(name: str, data: bytes, what: str, expect: str = "error") -> None:
        (root / name).write_bytes(data)
        cases.append(Case(root / name, what, expect))

    photo = Image.fromarray(_photo())
    png, jpg = _encoded(photo, "PNG"), _encoded(photo, "JPEG", quality=90)
    for n in (0, 8, 16, 33, 60, 100, len(png) // 2):
        put(f"trunc_png_{n}.png", png[:n], f"PNG cut at {n} bytes")
    put("trunc_png_no_iend.png", png[:-12], "PNG without its IEND chunk (PIL decodes it)", "either")
    for n in (2, 100, len(jpg) // 3):
        put(f"trunc_jpg_{n}.jpg", jpg[:n], f"JPEG cut at {n} bytes", "either")  # PIL may pad a cut JPEG
    rng = np.random.default_rng(1)
    for ext in ("png", "jpg", "bmp", "webp", "tif"):
        put(f"random.{ext}", rng.integers(0, 256, 500, dtype=np.uint8).tobytes(), f"random bytes as .{ext}")
    put("text.png", b"hello, I am not an image\n", "text named .png")
    put("html.jpg", b"<html><body>404</body></html>", "HTML error page named .jpg")
    put("flipped_crc.png", png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], "PNG with a corrupt chunk", "either")
    for name, (data, what) in _odd_modes(photo).items():
        put(name, data, what, "either")
    put("cmyk.jpg", _encoded(photo.convert("CMYK"), "JPEG"), "CMYK JPEG", "ok")
    put("gray.jpg", _encoded(photo.convert("L"), "JPEG"), "grayscale JPEG", "ok")
    put("photo.webp", _encoded(photo, "WEBP"), "WebP", "ok")
    put("photo.bmp", _encoded(photo, "BMP"), "BMP", "ok")
    put("photo.tif", _encoded(photo, "TIFF"), "TIFF", "ok")
    # EXIF orientation 1..8
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        put(f"exif_{o}.jpg", _encoded(photo, "JPEG", exif=exif), f"EXIF orientation {o}", "ok")
    bad_exif = _encoded(photo, "JPEG", exif=b"Exif\x00\x00" + b"\xff" * 40)
    put("exif_broken.jpg", bad_exif, "broken EXIF block", "either")
    # sizes
    for w, h in ((1, 1), (2, 2), (1, 300), (300, 1), (3, 500), (700, 2)):
        put(f"size_{w}x{h}.png", _encoded(Image.fromarray(_photo(w, h)), "PNG"), f"{w}x{h} image", "either")
    # bombs
    png_bomb(root / "bomb_9500.png", 9500, 9500)
    cases.append(Case(root / "bomb_9500.png", "9500x9500 PNG bomb (header only)"))
    png_bomb(root / "bomb_30000.png", 30000, 30000)
    cases.append(Case(root / "bomb_30000.png", "30000x30000 PNG bomb (above PIL's own limit)"))
    png_bomb(root / "bomb_strip.png", 1_000_000, 60)
    cases.append(Case(root / "bomb_strip.png", "1000000x60 strip bomb"))
    # not regular files
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "fifo.png")
        cases.append(Case(root / "fifo.png", "named pipe called .png"))
    (root / "folder.png").mkdir()
    cases.append(Case(root / "folder.png", "a folder called .png"))
    os.symlink(root / "does_not_exist.png", root / "dangling.png")
    cases.append(Case(root / "dangling.png", "dangling symlink"))
    # names
    for name in ("深度 写真.png", "é ñ ü.png", "emoji_🙂.png", "space name .png", "x" * 236 + ".png",
                 "semi;colon'quote\".png"):
        put(name, png, f"name {name[:20]!r}... ({len(name)} chars)", "ok")
    # output/input name clashes: predicting this folder into itself must not overwrite them
    for name in ("clash.png", "clash_color.png", "clash_depth16.png", "clash.npy.png"):
        put(name, png, f"output-name clash {name}", "either")
    # a malicious pickle named .png
    put("pickle.png", pickle.dumps(Evil(markers / "image_pickle")), "pickle named .png")
    return cases


# ------------------------------------------------------------------------------------------------ evaluation
GT_SHAPE = (6, 8)


def _npy(a, **kw):
    return lambda p: np.save(p, a, **kw)


def _raw(data: bytes):
    return lambda p: p.write_bytes(data)


def _png(a, mode=None):
    return lambda p: (Image.fromarray(a) if mode is None else Image.fromarray(a).convert(mode)).save(p)


def _ground_truths(good_gt: np.ndarray, markers: Path) -> tuple[dict, set]:
    """``{sample name: (writer, expect, what)}`` of odd ground truth, and the names written as PNG."""
    npy, raw, png = _npy, _raw, _png
    gts = {
        "gt_good": (npy(good_gt), "ok", "float metres"), "gt_uint8": (png(np.full(GT_SHAPE, 9, np.uint8)), "ok", "8-bit PNG"),
        "gt_bool": (npy(np.ones(GT_SHAPE, bool)), "error", "boolean"),
        "gt_complex": (npy(good_gt.astype(np.complex64)), "error", "complex"),
        "gt_str": (npy(np.full(GT_SHAPE, "abc")), "error", "strings"),
        "gt_object": (npy(np.array([Evil(markers / "gt_object")], dtype=object), allow_pickle=True), "error", "pickled object"),
        "gt_empty": (npy(np.zeros((0, 8), np.float32)), "error", "empty"),
        "gt_3d": (npy(np.ones((2, *GT_SHAPE), np.float32)), "error", "3-D"),
        "gt_0d": (npy(np.float32(2.0)), "error", "0-D"),
        "gt_trunc": (raw(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'"), "error", "truncated header"),
        "gt_nan": (npy(np.full(GT_SHAPE, np.nan, np.float32)), "error", "all NaN"),
        "gt_negative": (npy(-good_gt), "error", "negative"),
        "gt_inf": (npy(np.full(GT_SHAPE, np.inf, np.float32)), "error", "all inf"),
        "gt_size": (npy(np.ones((5, 5), np.float32)), "error", "size differs from the image"),
        "gt_palette": (png(np.full(GT_SHAPE, 3, np.uint8), "P"), "error", "palette PNG"),
        "gt_1bit": (png(np.full(GT_SHAPE, 255, np.uint8), "1"), "error", "1-bit PNG"),
        "gt_rgb": (png(_photo(GT_SHAPE[1], GT_SHAPE[0])), "error", "RGB PNG"),
        "gt_trunc_png": (raw(_encoded(Image.fromarray(np.full(GT_SHAPE, 2000, np.uint16)), "PNG")[:40]), "error", "cut PNG"),
        "gt_bomb": (lambda p: png_bomb(p, 9500, 9500), "error", "9500x9500 PNG bomb"),
        "gt_bomb_npy": (lambda p: _npy_header(p, (30000, 30000)), "error", "npy header bomb"),
    }
    png_gts = {"gt_uint8", "gt_palette", "gt_1bit", "gt_rgb", "gt_trunc_png", "gt_bomb"}
    return gts, png_gts


def _predictions(good_gt: np.ndarray, markers: Path) -> dict:
    """``{sample name: (writer, expect, what)}`` of odd prediction files."""
    npy, raw = _npy, _raw
    preds = {
        "pred_good": (npy(good_gt), "ok", "float metres"), "pred_small": (npy(np.ones((3, 4), np.float32)), "ok", "smaller, resized"),
        "pred_4d": (npy(np.ones((1, 1, *GT_SHAPE), np.float32)), "ok", "(1,1,H,W)"),
        "pred_empty": (npy(np.zeros((0,), np.float32)), "error", "zero-size"),
        "pred_bool": (npy(np.ones(GT_SHAPE, bool)), "error", "boolean"),
        "pred_complex": (npy(good_gt.astype(np.complex128)), "error", "complex"),
        "pred_str": (npy(np.full(GT_SHAPE, "x")), "error", "strings"),
        "pred_object": (npy(np.array([Evil(markers / "pred_object")], dtype=object), allow_pickle=True), "error", "pickle"),
        "pred_nan": (npy(np.full(GT_SHAPE, np.nan, np.float32)), "error", "NaN"),
        "pred_inf": (npy(np.full(GT_SHAPE, np.inf, np.float32)), "error", "inf"),
        "pred_3d": (npy(np.ones((3, 4, 5), np.float32)), "error", "3-D"),
        "pred_trunc": (raw(np.lib.format.magic(1, 0) + b"garbage"), "error", "truncated"),
        "pred_bomb": (lambda p: _npy_header(p, (30000, 30000)), "error", "npy header bomb"),
    }
    return preds


def evaluation(root: Path, markers: Path) -> tuple[Path, Path, list[Case]]:
    """A folder dataset (``rgb/``, ``depth/``, ``index.csv``) and a predictions folder; each sample is one case:
    ``gt_*`` samples have odd ground truth and a good prediction, ``pred_*`` samples good ground truth and an
    odd prediction. Returns (dataset root, predictions folder, cases named by sample)."""
    ds, pred = root / "ds", root / "pred"
    for d in (ds / "rgb", ds / "depth", pred):
        d.mkdir(parents=True, exist_ok=True)
    good_gt = np.full(GT_SHAPE, 2.0, np.float32)
    good_png = _encoded(Image.fromarray(_photo(GT_SHAPE[1], GT_SHAPE[0])), "PNG")
    rows, cases, scales = [], [], {}

    def sample(name: str, depth_file: str, write_depth, pred_file: str | None, write_pred, what: str,
               expect: str = "error", unit: str = "") -> None:
        (ds / "rgb" / f"{name}.png").write_bytes(good_png)
        write_depth(ds / "depth" / depth_file)
        if pred_file:
            write_pred(pred / pred_file)
        rows.append(f"{name},rgb/{name}.png,depth/{depth_file},{unit}")
        where = ds / "depth" / depth_file if name.startswith("gt_") else pred / (pred_file or f"{name}.npy")
        cases.append(Case(where, f"{name}: {what}", expect))

    ok_pred = _npy(good_gt * 1.1)
    gts, png_gts = _ground_truths(good_gt, markers)
    for name, (write, expect, what) in gts.items():
        ext = ".png" if name in png_gts else ".npy"
        sample(name, f"{name}{ext}", write, f"{name}.npy", ok_pred, what, expect, "mm" if ext == ".png" else "")
    preds = _predictions(good_gt, markers)
    for name, (write, expect, what) in preds.items():
        sample(name, f"{name}.npy", _npy(good_gt), f"{name}.npy", write, what, expect)
    sample("pred_missing", "pred_missing.npy", _npy(good_gt), None, None, "no prediction file")
    for name, scale, expect in (("pred_scale_ok", 0.001, "ok"), ("pred_scale_list", [0.001], "error"),
                                ("pred_scale_inf", "INF", "error"), ("pred_scale_str", "0.001", "error"),
                                ("pred_scale_neg", -0.001, "error"), ("pred_scale_zero", 0, "error")):
        sample(name, f"{name}.npy", _npy(good_gt), f"{name}_depth16.png", _png(np.full(GT_SHAPE, 2000, np.uint16)),
               f"png16_scale {scale!r}", expect)
        scales[name] = {"kind": "metric", "png16_scale": scale}
    sample("pred_unicode_深度", "pred_unicode_深度.npy", _npy(good_gt), "pred_unicode_深度.npy", _npy(good_gt),
           "unicode sample name", "ok")
    (pred / "predictions.json").write_text(json.dumps({"output_kind": "metric", "files": scales})
                                           .replace('"INF"', "1e400"))
    (ds / "index.csv").write_text("name,rgb,depth,depth_unit\n" + "\n".join(rows) + "\n" +
                                  "../../escape,rgb/gt_good.png,depth/gt_good.npy,\n"
                                  "outside,/etc/hostname,depth/gt_good.npy,\n", encoding="utf-8")
    cases.append(Case(ds / "index.csv", "../../escape: sample name leaving the predictions folder"))
    cases.append(Case(ds / "index.csv", "outside: index.csv row naming /etc/hostname"))
    return ds, pred, cases


def _npy_header(path: Path, shape: tuple[int, ...]) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})


# ------------------------------------------------------------------------------------------------ weights
def _header_cases(root: Path, state: dict, header: dict) -> list[Case]:
    """depthlab checkpoints whose JSON header lies: not JSON, no or unknown model, arguments naming files, huge
    or unknown arguments, bad ``depth_info``, tensors that do not fit."""
    import torch
    from safetensors.torch import save_file

    cases: list[Case] = []

    def with_header(name: str, what: str, meta=None, raw: str | None = None, tensors=None) -> None:
        save_file(tensors or state, str(root / name),
                  metadata={"depthlab": raw if raw is not None else json.dumps({**header, **meta})})
        cases.append(Case(root / name, what))

    with_header("header_not_json.safetensors", "header is not JSON", raw="{not json")
    with_header("header_list.safetensors", "header is a JSON list", raw="[1, 2]")
    with_header("header_no_name.safetensors", "header without model_name", {"model_name": None})
    with_header("header_unknown_model.safetensors", "unknown model name", {"model_name": "unet_xxl"})
    with_header("header_bomb.safetensors", "model_args base_channels 100000",
                {"model_args": {"base_channels": 100000}})
    with_header("header_path.safetensors", "model_args checkpoint_path", {"model_args": {"base_channels": 4,
                "checkpoint_path": str(root / "good.pth")}})
    with_header("header_encoder.safetensors", "model_args encoder_checkpoint",
                {"model_args": {"base_channels": 4, "encoder_checkpoint": "/etc/hostname"}})
    with_header("header_pretrained.safetensors", "model_args pretrained", {"model_args": {"base_channels": 4,
                "pretrained": True}})
    with_header("header_kwarg.safetensors", "model_args an unknown keyword", {"model_args": {"base_channels": 4,
                "bogus": 1}})
    with_header("header_args_list.safetensors", "model_args a list", {"model_args": [1, 2]})
    with_header("header_depth_info.safetensors", "depth_info output_kind bogus",
                {"depth_info": {**header["depth_info"], "output_kind": "bogus"}})
    with_header("header_depth_info_key.safetensors", "depth_info unknown key",
                {"depth_info": {**header["depth_info"], "evil": 1}})
    with_header("header_wrong_tensors.safetensors", "header right, tensors of another size",
                {}, tensors={k: torch.zeros(1) for k in state})
    return cases


def weights(root: Path, markers: Path) -> tuple[list[Case], Path]:
    """Bad weight files of every kind, plus two good ones. Returns (cases, a good depthlab checkpoint).
    The model is ``unet`` with ``base_channels=4`` (what the suite passes to ``create_model``)."""
    import torch
    from safetensors.torch import load_file, save_file

    from depthlab import create_model, save_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model("unet", base_channels=4)
    good = save_checkpoint(model, root / "good.safetensors")
    torch.save(model.state_dict(), root / "good.pth")
    cases = [Case(good, "good depthlab checkpoint", "ok"), Case(root / "good.pth", "good .pth state dict", "ok")]
    state = load_file(str(good))
    header = json.loads(__import__("safetensors").safe_open(str(good), "pt").metadata()["depthlab"])

    def put(name: str, data: bytes | None, what: str, expect: str = "error") -> None:
        if data is not None:
            (root / name).write_bytes(data)
        cases.append(Case(root / name, what, expect))

    good_bytes, pth_bytes = good.read_bytes(), (root / "good.pth").read_bytes()
    put("empty.pth", b"", "empty .pth")
    put("empty.safetensors", b"", "empty .safetensors")
    put("garbage.pth", os.urandom(300), "random bytes .pth")
    put("garbage.safetensors", os.urandom(300), "random bytes .safetensors")
    put("trunc.pth", pth_bytes[: len(pth_bytes) // 2], "truncated .pth (zip)")
    put("trunc.safetensors", good_bytes[: len(good_bytes) // 2], "truncated .safetensors")
    put("trunc_header.safetensors", good_bytes[:100], "safetensors cut inside its header")
    put("huge_header_len.safetensors", struct.pack("<Q", 2**40) + b"{}", "header length of 1 TB")
    buf = _pyio.BytesIO()
    torch.save([1, 2, 3], buf)
    put("list.pth", buf.getvalue(), ".pth holding a list")
    buf = _pyio.BytesIO()
    torch.save({"state_dict": {"a": 1}}, buf)
    put("not_tensors.pth", buf.getvalue(), ".pth state dict of ints")
    put("evil.pth", pickle.dumps({"state_dict": Evil(markers / "evil_pth")}), "raw malicious pickle")
    buf = _pyio.BytesIO()
    torch.save({"w": Evil(markers / "evil_zip")}, buf)
    put("evil_zip.pth", buf.getvalue(), "malicious pickle in torch's zip format")
    buf = _pyio.BytesIO()
    torch.save(create_model("fastdepth").state_dict(), buf)
    put("wrong_arch.pth", buf.getvalue(), "weights of another architecture")
    save_file({"x": torch.zeros(2)}, str(root / "plain.safetensors"))
    cases.append(Case(root / "plain.safetensors", "safetensors without a depthlab header"))
    cases += _header_cases(root, state, header)
    (root / "folder.safetensors").mkdir()
    cases.append(Case(root / "folder.safetensors", "a folder"))
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "fifo.safetensors")
        cases.append(Case(root / "fifo.safetensors", "a named pipe"))
        os.mkfifo(root / "fifo.pth")
        cases.append(Case(root / "fifo.pth", "a named pipe .pth"))
    cases.append(Case(root / "missing.safetensors", "no such file"))
    return cases, good


# ------------------------------------------------------------------------------------------------ configs
ALIAS_BOMB = ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
              "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
              "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n")


def configs(root: Path, markers: Path, out_dir: Path) -> list[Case]:
    """Experiment YAMLs: one good, the rest bad. ``out_dir`` is their ``output_dir``."""
    root.mkdir(parents=True, exist_ok=True)
    base = (f"output_dir: {json.dumps(str(out_dir))}\nmodel: {{name: unet, kwargs: {{base_channels: 4}}}}\n"
            "data: {dataset: synthetic, size: [32, 32], batch_size: 2, kwargs: {n: 4}}\n"
            "train: {max_steps: 1, max_epochs: -1, accelerator: cpu, devices: 1, loggers: []}\n")
    bodies = {
        "good": ("name: good\n" + base, "ok"),
        "alias_bomb": ("name: bomb\n" + base + "x:\n" + "".join("  " + line + "\n" for line in ALIAS_BOMB.splitlines()),
                       "error"),
        "kwargs_bomb": ("name: kb\n" + base.replace("model: {name: unet, kwargs: {base_channels: 4}}\n", "")
                        + "model:\n  name: unet\n  kwargs:\n    base_channels: 4\n"
                        + "".join("    " + line + "\n" for line in ALIAS_BOMB.splitlines()), "error"),
        "lr_inf": ("name: lr\n" + base + "optim: {lr: .inf}\n", "error"),
        "lr_nan": ("name: lrn\n" + base + "optim: {lr: .nan}\n", "error"),
        "max_depth_inf": ("name: md\n" + base.replace("size: [32, 32]", "size: [32, 32], max_depth: .inf"), "error"),
        "step_size_0": ("name: ss\n" + base + "optim: {scheduler: step, step_size: 0}\n", "error"),
        "name_dotdot": ("name: ../../x\n" + base, "error"),
        "name_abs": (f"name: {json.dumps(str(root / 'abs'))}\n" + base, "error"),
        "name_empty": ("name: ''\n" + base, "error"),
        "unknown_key": ("name: uk\n" + base + "optimizer: {lr: 1}\n", "error"),
        "wrong_type": ("name: wt\n" + base.replace("batch_size: 2", "batch_size: two"), "error"),
        "syntax": ("name: [unclosed\n" + base, "error"),
        "top_list": ("- 1\n- 2\n", "error"),
        "binary": (None, "error"),
        "python_tag": (f"name: !!python/object/apply:os.system ['touch {markers / 'yaml_tag'}']\n" + base, "error"),
        "unknown_loss": ("name: ul\n" + base + "loss: {terms: {l7: 1.0}}\n", "error"),
        "negative_batch": ("name: nb\n" + base.replace("batch_size: 2", "batch_size: -3"), "error"),
    }
    cases = []
    for name, (body, expect) in bodies.items():
        path = root / f"{name}.yaml"
        path.write_bytes(os.urandom(200) if body is None else body.encode())
        cases.append(Case(path, name, expect))
    (root / "empty.yaml").write_text("")
    cases.append(Case(root / "empty.yaml", "empty file", "either"))
    cases.append(Case(root / "missing.yaml", "no such file"))
    return cases
