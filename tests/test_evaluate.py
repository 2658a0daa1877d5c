"""depthlab.evaluate / `depthlab eval`: reference parity, real NYU samples, bad items, model path."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from depthlab.evaluation.runner import evaluate, format_markdown
from depthlab.evaluation.protocols import get_protocol
from depthlab.metrics import METRIC_NAMES

from bundled import FASTDEPTH_REFERENCE as REF, SAMPLES

NYU = SAMPLES / "nyu"
REF_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")

needs_ref = pytest.mark.skipif(not (REF / "expected_metrics.json").is_file(), reason="bundled reference files missing")
needs_nyu = pytest.mark.skipif(not (NYU / "index.csv").is_file(), reason="bundled NYU samples missing")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- helpers
def _reference_folder(root: Path, stem: str) -> Path:
    """A folder dataset holding the reference sample (RGB + millimetre PNG depth) as ``<stem>``."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    shutil.copy(REF / "rgb.png", root / "rgb" / f"{stem}.png")
    shutil.copy(REF / "depth_mm.png", root / "depth" / f"{stem}.png")
    _write_index(root, [(stem, f"rgb/{stem}.png", f"depth/{stem}.png")], unit="mm")
    return root


def _write_index(folder: Path, rows: list[tuple[str, str, str]], unit: str = "mm") -> None:
    with open(folder / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "rgb", "depth", "depth_unit"])
        for name, rgb, depth in rows:
            w.writerow([name, rgb, depth, unit])


def _png16(path: Path, depth_m: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(depth_m * 1000).astype(np.uint16)).save(path)


def _rgb(path: Path, h: int, w: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(path)


class ListDataset:
    """A minimal Dataset object: a list of Sample dicts."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def _sample(name, depth, image=None):
    depth = torch.as_tensor(depth, dtype=torch.float32).reshape(1, *np.shape(depth)[-2:])
    if image is None:
        image = torch.full((3, *depth.shape[-2:]), 0.5)
    return {"image": image, "depth": depth, "mask": depth > 0, "meta": {"name": name, "dataset": "list"}}


def _np_metrics(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """Independent numpy implementation on already-selected valid pixels (1-D arrays)."""
    p = p.astype(np.float64)
    g = g.astype(np.float64)
    r = np.maximum(p / g, g / p)
    d = np.log(p) - np.log(g)
    return {
        "abs_rel": np.mean(np.abs(p - g) / g), "sq_rel": np.mean((p - g) ** 2 / g),
        "rmse": np.sqrt(np.mean((p - g) ** 2)), "rmse_log": np.sqrt(np.mean(d ** 2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
        "silog": 100 * np.sqrt(np.mean(d ** 2) - np.mean(d) ** 2),
        "mae": np.mean(np.abs(p - g)), "mse": np.mean((p - g) ** 2),
        "delta1": np.mean(r < 1.25), "delta2": np.mean(r < 1.25 ** 2), "delta3": np.mean(r < 1.25 ** 3),
    }


# ----------------------------------------------------------------------------- reference parity
@needs_ref
def test_reference_parity_npy_ground_truth(tmp_path):
    expected = json.loads((REF / "expected_metrics.json").read_text())["metrics_expected_pred_vs_depth_npy"]
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(REF / "expected_pred.npy", preds / "fastdepth_sample.npy")  # (1,1,224,224) float32
    rgb = torch.from_numpy(np.asarray(Image.open(REF / "rgb.png"), dtype=np.float32) / 255).permute(2, 0, 1)
    ds = ListDataset([_sample("fastdepth_sample", np.load(REF / "depth.npy"), rgb)])
    res = evaluate(dataset=ds, predictions=preds, protocol="none")
    s = res["summary"]
    assert s["n_images"] == 1 and s["n_pixels"] == expected["n_valid"] == 50176
    for k in REF_KEYS:
        assert s[k] == pytest.approx(expected[k], abs=1e-4), k
        assert abs(s[k] - expected[k]) < 1e-6, k  # in fact float64 sums reproduce it far more tightly
    assert res["skipped"] == {} and res["per_image"]["fastdepth_sample"]["n_pixels"] == 50176


@needs_ref
def test_reference_parity_mm_png_through_folder_dataset(tmp_path):
    expected = json.loads((REF / "expected_metrics.json").read_text())["metrics_expected_pred_vs_depth_mm_png"]
    root = _reference_folder(tmp_path / "ds", "sample")
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(REF / "expected_pred.npy", preds / "sample.npy")
    res = evaluate(dataset="folder", root=root, split="test", predictions=preds, protocol="none",
                   out=tmp_path / "out" / "res.json")
    s = res["summary"]
    assert s["n_pixels"] == expected["n_valid"]
    for k in REF_KEYS:
        assert s[k] == pytest.approx(expected[k], abs=1e-4), k
    on_disk = json.loads((tmp_path / "out" / "res.json").read_text())
    assert on_disk["summary"] == s
    assert on_disk["protocol"] == get_protocol("none").to_dict()
    assert on_disk["dataset"]["name"] == "folder" and on_disk["predictions"]["kind"] == "metric"
    assert "created" in on_disk and on_disk["model"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["res.json"]


@needs_ref
def test_png16_predictions_need_and_use_pred_scale(tmp_path):
    depth = np.load(REF / "depth.npy")
    pred = np.load(REF / "expected_pred.npy")[0, 0]
    preds = tmp_path / "preds"
    _png16(preds / "a.png", pred)
    ds = ListDataset([_sample("a", depth)])
    with pytest.raises(ValueError, match="pred_scale"):
        evaluate(dataset=ds, predictions=preds, protocol="none")
    from depthlab.errors import InputError

    with pytest.raises(InputError, match="pred_scale must be a positive"):  # a user's value: one line on the CLI
        evaluate(dataset=ds, predictions=preds, pred_scale=0.0, protocol="none")
    res = evaluate(dataset=ds, predictions=preds, pred_scale=0.001, protocol="none")
    q = np.round(pred * 1000).astype(np.uint16).astype(np.float32) * np.float32(0.001)
    assert res["summary"]["abs_rel"] == pytest.approx(_np_metrics(q.ravel(), depth.ravel())["abs_rel"], rel=1e-6)


# ----------------------------------------------------------------------------- real NYU samples
@needs_nyu
def test_real_nyu_samples_nyu_eigen_constant_prediction(tmp_path):
    rows = list(csv.DictReader(open(NYU / "index.csv")))
    preds = tmp_path / "preds"
    preds.mkdir()
    # 3.0001 m, not 3 m: with a round constant, pixels at exactly 2.4 m or 3.75 m sit on the delta1 boundary
    # (ratio 1.25) and float32 vs float64 mm->m conversion decides their side; off-grid, nothing ties.
    const = float(np.float32(3.0001))
    for row in rows:  # half-resolution constant predictions: also exercises the resize to GT size
        np.save(preds / f"{row['name']}.npy", np.full((240, 320), const, np.float32))
    res = evaluate(dataset="folder", root=NYU, predictions=preds, protocol="nyu_eigen")

    expected_per_image = {}
    for row in rows:
        g = np.asarray(Image.open(NYU / row["depth"])).astype(np.float64) / 1000.0
        if g.shape != (480, 640):
            continue
        crop = np.zeros_like(g, bool)
        crop[45:471, 41:601] = True
        v = crop & (g > 1e-3) & (g < 10.0)
        expected_per_image[row["name"]] = _np_metrics(np.full(v.sum(), const), g[v])
        assert res["per_image"][row["name"]]["n_pixels"] == int(v.sum())
    assert set(res["per_image"]) == set(expected_per_image) and len(expected_per_image) == 4
    for name, exp in expected_per_image.items():
        for k in METRIC_NAMES:
            assert res["per_image"][name][k] == pytest.approx(exp[k], rel=1e-6, abs=1e-9), (name, k)
    for k in METRIC_NAMES:  # per-image averaging
        assert res["summary"][k] == pytest.approx(np.mean([e[k] for e in expected_per_image.values()]), rel=1e-6), k
    # the 224x224 FastDepth sample cannot take the 480x640 Eigen crop: skipped with the reason
    assert list(res["skipped"]) == ["fastdepth_sample"]
    assert "fastdepth_sample.png" in res["skipped"]["fastdepth_sample"]
    assert "480x640" in res["skipped"]["fastdepth_sample"]

    # the same through the CLI: the table carries the protocol with its full, unmangled settings
    from typer.testing import CliRunner

    from depthlab.cli import app

    r = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--root", str(NYU), "--predictions", str(preds),
                                 "--protocol", "nyu_eigen"])
    assert r.exit_code == 0, r.output
    assert get_protocol("nyu_eigen").describe() in r.stdout
    assert "rows 45:471, cols 41:601" in r.stdout
    assert f"| nyu_eigen | 4 | {res['summary']['n_pixels']} | {res['summary']['abs_rel']:.4f} |" in r.stdout


# ----------------------------------------------------------------------------- bad items through the CLI
def _bad_folder(tmp_path: Path) -> tuple[Path, Path, dict]:
    root = tmp_path / "bad"
    h, w = 16, 20
    rng = np.random.default_rng(0)
    good = {}
    rows = []
    for i, name in enumerate(["good1", "good2", "corrupt", "mismatch", "allzero", "nopred", "listed_missing"]):
        rows.append((name, f"rgb/{name}.png", f"depth/{name}.png"))
        if name == "listed_missing":
            continue  # index.csv names files that do not exist
        if name == "corrupt":
            (root / "rgb").mkdir(parents=True, exist_ok=True)
            (root / "rgb" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
        else:
            _rgb(root / "rgb" / f"{name}.png", h, w, seed=i)
        if name == "mismatch":
            _png16(root / "depth" / f"{name}.png", np.full((8, 10), 2.0))
        elif name == "allzero":
            _png16(root / "depth" / f"{name}.png", np.zeros((h, w)))
        else:
            d = np.round(rng.uniform(0.5, 6.0, (h, w)), 3)
            d[0, :5] = 0.0  # some missing pixels
            _png16(root / "depth" / f"{name}.png", d)
            good[name] = d
    _write_index(root, rows, unit="mm")
    preds = tmp_path / "preds"
    preds.mkdir()
    for name in ["good1", "good2", "corrupt", "mismatch", "allzero", "listed_missing"]:
        np.save(preds / f"{name}.npy", np.full((h, w), 2.5, np.float32))
    return root, preds, good


def test_cli_bad_items_are_skipped_with_reasons(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    root, preds, good = _bad_folder(tmp_path)
    out = tmp_path / "results" / "eval.json"
    r = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--root", str(root), "--predictions", str(preds),
                                 "--protocol", "none", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert sorted(res["per_image"]) == ["good1", "good2"]
    sk = res["skipped"]
    assert sorted(sk) == ["allzero", "corrupt", "listed_missing", "mismatch", "nopred"]
    for name, reason in sk.items():
        assert "\n" not in reason and reason, name
    assert "corrupt.png" in sk["corrupt"] and "decode" in sk["corrupt"]
    assert "mismatch.png" in sk["mismatch"] and "differs" in sk["mismatch"]
    assert "allzero.png" in sk["allzero"] and "no valid ground-truth pixels" in sk["allzero"]
    assert sk["nopred"] == f"no prediction file nopred.npy, nopred.png or nopred_depth16.png in {preds}"
    assert "listed_missing.png" in sk["listed_missing"] and "not found" in sk["listed_missing"]
    # the two good images, pooled per image, against numpy
    exp = [_np_metrics(np.full((good[n] > 0).sum(), 2.5), good[n][good[n] > 0]) for n in ("good1", "good2")]
    for k in METRIC_NAMES:
        assert res["summary"][k] == pytest.approx(np.mean([e[k] for e in exp]), rel=1e-6), k
    assert res["summary"]["n_images"] == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval.json"]  # no temp files left beside it
    # the table names the protocol and its settings; skipped items are reported
    assert "Protocol `none`" in r.stdout and get_protocol("none").describe() in r.stdout.replace("\n", "")
    assert "| none |" in r.stdout


def test_cli_unknown_protocol_fails_cleanly(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    root, preds, _ = _bad_folder(tmp_path)
    r = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--root", str(root), "--predictions", str(preds),
                                 "--protocol", "nyu_eigne"])
    assert r.exit_code == 2
    assert "nyu_eigen" in r.output


# ----------------------------------------------------------------------------- averaging, markdown, errors
def test_pixel_averaging_and_markdown():
    a = np.array([[1.0, 2.0], [4.0, 0.0]])  # 3 valid pixels
    b = np.array([[2.0, 0.0], [0.0, 0.0]])  # 1 valid pixel
    ds = ListDataset([_sample("a", a), _sample("b", b)])
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for n in ("a", "b"):
            np.save(Path(d) / f"{n}.npy", np.full((2, 2), 2.0, np.float32))
        per_img = evaluate(dataset=ds, predictions=d, protocol="none")
        pooled = evaluate(dataset=ds, predictions=d, protocol="none:averaging=pixel")
    # abs_rel by hand: image a = (|2-1|/1 + 0 + |2-4|/4) / 3 = 0.5, image b = 0
    assert per_img["summary"]["abs_rel"] == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert pooled["summary"]["abs_rel"] == pytest.approx(0.375)  # 1.5 / 4
    assert pooled["protocol"]["averaging"] == "pixel" and pooled["protocol"]["name"] == "none:averaging=pixel"
    md = format_markdown(pooled)
    assert md.startswith("**Protocol `none:averaging=pixel`**")
    assert get_protocol("none:averaging=pixel").describe() in md
    assert "| protocol | n_images | n_pixels | abs_rel |" in md and "| 0.3750 |" in md


def test_source_errors():
    ds = ListDataset([_sample("a", np.ones((2, 2)))])
    with pytest.raises(ValueError, match="exactly one source"):
        evaluate(dataset=ds, protocol="none")
    with pytest.raises(FileNotFoundError):
        evaluate(dataset=ds, predictions="/nonexistent/preds/dir", protocol="none")
    with pytest.raises(ValueError, match="alignment=none"):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            evaluate(dataset=ds, predictions=d, pred_kind="disparity", protocol="nyu_eigen")


def test_non_finite_prediction_is_skipped(tmp_path):
    ds = ListDataset([_sample("a", np.ones((2, 2))), _sample("b", np.ones((2, 2)))])
    np.save(tmp_path / "a.npy", np.array([[1.0, np.nan], [1.0, 1.0]], np.float32))
    np.save(tmp_path / "b.npy", np.ones((2, 2), np.float32))
    res = evaluate(dataset=ds, predictions=tmp_path, protocol="none")
    assert list(res["per_image"]) == ["b"] and "1 non-finite" in res["skipped"]["a"]


def test_no_image_evaluated_gives_null_metrics(tmp_path):
    ds = ListDataset([_sample("a", np.zeros((2, 2)))])
    with pytest.warns(UserWarning, match="no image could be evaluated"):
        res = evaluate(dataset=ds, predictions=tmp_path, protocol="none", out=tmp_path / "r.json")
    assert res["summary"]["n_images"] == 0 and res["summary"]["abs_rel"] is None
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["abs_rel"] is None
    assert "n/a" in format_markdown(res)


# ----------------------------------------------------------------------------- model path
@needs_ref
def test_cli_fastdepth_model_reproduces_reference_metrics(tmp_path):
    """End to end: `depthlab eval --model fastdepth` on the reference sample = expected_metrics.json (mm PNG GT)."""
    from typer.testing import CliRunner

    from depthlab.cli import app

    expected = json.loads((REF / "expected_metrics.json").read_text())["metrics_expected_pred_vs_depth_mm_png"]
    root = _reference_folder(tmp_path / "ds", "s")
    out = tmp_path / "fd.json"
    r = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--root", str(root), "--model", "fastdepth",
                                 "--protocol", "none", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["model"]["name"] == "fastdepth" and res["model"]["output_kind"] == "metric"
    for k in REF_KEYS:  # the reference prediction itself is reproducible to 1e-4 m, so metrics to ~1e-4
        assert res["summary"][k] == pytest.approx(expected[k], abs=2e-4), k


# ----------------------------------------------------------------------------- model path (tiny stand-in)
def _ramp_model(kind="metric"):
    from depthlab.models.registry import WeightsInfo

    class Ramp(torch.nn.Module):
        """Depth = 1 + column / width: not flip-symmetric, so flip averaging is visible."""

        def forward(self, x):
            w = x.shape[-1]
            col = torch.arange(w, dtype=x.dtype, device=x.device) / w
            return {"depth": (1.0 + col).expand(x.shape[0], 1, x.shape[-2], w)}

    m = Ramp()
    m.depth_info = WeightsInfo(output_kind=kind, multiple_of=1)
    return m


def test_model_path_with_flip_average():
    h, w = 4, 8
    # flip-averaged ramp: 1 + (c + (w-1-c)) / (2w) = 1 + 7/16 everywhere
    flat = np.full((h, w), 1.0 + (w - 1) / (2 * w))
    ds = ListDataset([_sample("x", flat)])
    with_flip = evaluate(dataset=ds, model=_ramp_model(), protocol="none:flip_average=true")
    without = evaluate(dataset=ds, model=_ramp_model(), protocol="none")
    assert with_flip["summary"]["abs_rel"] < 1e-6
    ramp = 1.0 + np.arange(w) / w
    exp = _np_metrics(np.tile(ramp, (h, 1)).ravel(), flat.ravel())["abs_rel"]
    assert without["summary"]["abs_rel"] == pytest.approx(exp, rel=1e-6)
    assert with_flip["model"]["output_kind"] == "metric" and with_flip["predictions"] is None


def test_model_path_relative_model_needs_alignment():
    ds = ListDataset([_sample("x", 2.0 + np.arange(32.0).reshape(4, 8) / 10)])
    with pytest.raises(ValueError, match="alignment=none"):
        evaluate(dataset=ds, model=_ramp_model("relative"), protocol="nyu_eigen")
    res = evaluate(dataset=ds, model=_ramp_model("relative"), protocol="marigold")
    assert res["summary"]["n_images"] == 1 and math.isfinite(res["summary"]["abs_rel"])


def test_per_category_breakdown_by_hand(tmp_path):
    """Categories (e.g. aerial tiles: residential / field) get their own averages next to the overall one."""
    gts = {"r1": np.array([[1.0, 2.0], [4.0, 0.0]]), "r2": np.array([[2.0, 2.0], [2.0, 2.0]]),
           "f1": np.array([[4.0, 4.0], [4.0, 4.0]])}
    samples = []
    for name, g in gts.items():
        s = _sample(name, g)
        s["meta"]["category"] = "residential" if name.startswith("r") else "field"
        samples.append(s)
        np.save(tmp_path / f"{name}.npy", np.full((2, 2), 2.0, np.float32))
    res = evaluate(dataset=ListDataset(samples), predictions=tmp_path, protocol="none")
    # abs_rel by hand: r1 = 0.5 (see above), r2 = 0, f1 = |2-4|/4 = 0.5
    assert res["per_category"]["residential"]["abs_rel"] == pytest.approx(0.25)
    assert res["per_category"]["residential"]["n_images"] == 2
    assert res["per_category"]["field"]["abs_rel"] == pytest.approx(0.5)
    assert res["summary"]["abs_rel"] == pytest.approx(1.0 / 3)
    assert res["per_image"]["f1"]["category"] == "field"
    md = format_markdown(res)
    assert "| protocol | category | n_images |" in md
    assert "| none | field | 1 |" in md and "| none | all | 3 |" in md


def test_no_categories_no_breakdown(tmp_path):
    np.save(tmp_path / "a.npy", np.full((2, 2), 2.0, np.float32))
    res = evaluate(dataset=ListDataset([_sample("a", np.full((2, 2), 2.0))]), predictions=tmp_path, protocol="none")
    assert res["per_category"] == {} and "category" not in format_markdown(res)


def test_cli_input_size_is_the_predictors(tmp_path):
    """--input-size model runs FastDepth at its 224x224 training size; native keeps 480x640 (and scores worse)."""
    from typer.testing import CliRunner

    from depthlab.cli import app

    root = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets" / "samples" / "nyu"
    res = {}
    for size in ("model", "native"):
        out = tmp_path / f"{size}.json"
        r = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--root", str(root), "--model", "fastdepth",
                                     "--protocol", "nyu_eigen", "--limit", "1", "--input-size", size, "--out", str(out)])
        assert r.exit_code == 0, r.output
        res[size] = json.loads(out.read_text())
    assert res["model"]["model"]["input_size"] == [224, 224] and res["native"]["model"]["input_size"] is None
    assert res["native"]["summary"]["abs_rel"] > 1.5 * res["model"]["summary"]["abs_rel"]
    r = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--root", str(root), "--model", "fastdepth",
                                 "--input-size", "big"])
    assert r.exit_code == 2 and "--input-size must be auto, native, model, keep-aspect, N or HxW" in r.output
    # the default ("auto") is the trained size for weights that declare one
    default = evaluate("folder", root=root, model="fastdepth", protocol="nyu_eigen", limit=1)
    assert default["summary"] == res["model"]["summary"] and default["model"]["input_size"] == [224, 224]


def test_predict_output_folder_evaluates_directly(tmp_path):
    """`depthlab predict` writes .npy next to colour/16-bit PNGs: eval --predictions takes that folder as it is."""
    from depthlab.predictor import predict_files

    root = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets" / "samples" / "nyu"
    preds = tmp_path / "preds"
    predict_files([str(root / "rgb" / "metric3d_00000.png")], model="fastdepth", out_dir=preds,
                  formats=["npy", "png16", "color"])
    from_files = evaluate("folder", root=root, predictions=preds, protocol="nyu_eigen", limit=1)
    from_model = evaluate("folder", root=root, model="fastdepth", protocol="nyu_eigen", limit=1)
    assert from_files["skipped"] == {}
    assert from_files["summary"]["abs_rel"] == pytest.approx(from_model["summary"]["abs_rel"], abs=1e-6)


def test_a_checkpoint_given_as_the_model_is_named_in_the_results(tmp_path):
    import depthlab

    ckpt = depthlab.save_checkpoint(depthlab.create_model("fastdepth", pretrained=True), tmp_path / "fd.safetensors")
    samples = Path(depthlab.__file__).parent / "assets" / "samples" / "nyu"
    by_path = evaluate("folder", root=samples, model=str(ckpt), protocol="nyu_eigen", limit=1)
    by_name = evaluate("folder", root=samples, model="fastdepth", protocol="nyu_eigen", limit=1)
    assert by_path["model"]["checkpoint"] == str(ckpt) and "checkpoint" not in by_name["model"]
    assert by_path["summary"] == by_name["summary"]  # the same weights, evaluated the same way


def test_predict_output_folder_evaluates_as_it_is(tmp_path):
    """`depthlab predict` writes <stem>.npy and <stem>_depth16.png (+ predictions.json with the PNG scale);
    `depthlab eval --predictions` reads either without extra flags, with the same numbers (to mm rounding)."""
    import depthlab
    from depthlab.predictor import predict_files

    samples = Path(depthlab.__file__).parent / "assets" / "samples" / "nyu"
    out = tmp_path / "pred"
    predict_files(sorted((samples / "rgb").glob("*.png")), model="fastdepth", out_dir=out, formats=["npy", "png16"])
    from_npy = evaluate("folder", root=samples, predictions=out, protocol="nyu_eigen")
    for f in out.glob("*.npy"):
        f.unlink()
    from_png = evaluate("folder", root=samples, predictions=out, protocol="nyu_eigen")
    assert from_png["summary"]["n_images"] == from_npy["summary"]["n_images"] > 0
    assert from_png["summary"]["abs_rel"] == pytest.approx(from_npy["summary"]["abs_rel"], abs=5e-4)


def test_cli_nothing_scored_exits_1_and_dataset_options_reach_the_dataset(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    samples = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets" / "samples" / "nyu"
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["eval", "--dataset", "folder", "--root", str(samples), "--predictions", str(empty)])
    assert r.exit_code == 1 and "no image was scored" in r.output
    # --data-opt reaches the dataset: a wrong depth_scale (metres per unit) changes every number
    args = ["eval", "--dataset", "folder", "--root", str(samples), "--model", "fastdepth", "--limit", "1"]
    plain = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a.json")])
    scaled = CliRunner().invoke(app, [*args, "--data-opt", "depth_scale=0.002", "--out", str(tmp_path / "b.json")])
    assert plain.exit_code == scaled.exit_code == 0, scaled.output
    a, b = (json.loads((tmp_path / f).read_text())["summary"]["rmse"] for f in ("a.json", "b.json"))
    assert a != b
    bad = CliRunner().invoke(app, [*args, "--data-opt", "depth_scale"])
    assert bad.exit_code == 2 and "--data-opt 'depth_scale': expected KEY=VALUE" in bad.output


def test_console_script_prints_depthlab_warnings_on_one_line(tmp_path):
    import subprocess
    import sys

    samples = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets" / "samples" / "nyu"
    r = subprocess.run([sys.executable, "-m", "depthlab", "eval", "--dataset", "folder", "--root", str(samples),
                        "--predictions", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "warning: no image could be evaluated (5 skipped)\n" in r.stderr
    assert "warnings.warn" not in r.stderr and "UserWarning" not in r.stderr


def test_a_disparity_predict_folder_is_scored_as_disparity(tmp_path):
    """The folder's predictions.json says what it holds: a disparity model's .npy files are not scored as
    metres; contradicting it is an error, and a scale read from it is recorded."""
    pytest.importorskip("transformers")
    import depthlab
    from tiny_models import TINY_DAV2
    from depthlab.predictor import predict_files

    samples = Path(depthlab.__file__).parent / "assets" / "samples" / "nyu"
    tiny = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2)
    out = tmp_path / "pred"
    predict_files(sorted((samples / "rgb").glob("metric3d_*.png"))[:1], model=tiny, out_dir=out, formats="npy")
    res = evaluate("folder", root=samples, predictions=out, protocol="depth_anything:crop=nyu_eigen,max_depth=10")
    assert res["predictions"]["kind"] == "disparity" and res["summary"]["n_images"] == 1
    with pytest.raises(ValueError, match="predictions.json says the predictions are disparity"):
        evaluate("folder", root=samples, predictions=out, protocol="nyu_eigen", pred_kind="metric")
    # a metric folder's PNG scale comes from the sidecar and is recorded as such
    metric = tmp_path / "metric"
    predict_files(sorted((samples / "rgb").glob("metric3d_*.png"))[:1], model="fastdepth", out_dir=metric,
                  formats="png16")
    res = evaluate("folder", root=samples, predictions=metric, protocol="nyu_eigen")
    assert res["predictions"]["pred_scale"] == "per file from predictions.json" and res["summary"]["n_images"] == 1


def test_bad_data_opt_values_are_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    samples = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets" / "samples" / "nyu"
    base = ["eval", "--dataset", "folder", "--root", str(samples), "--model", "fastdepth", "--limit", "1"]
    for opt, message in [("typo=1", "dataset 'folder' has no option 'typo'"), ("root=/x", "--data-opt root=...: use --root"),
                         ("x=[1,", "value is not valid YAML")]:
        r = CliRunner().invoke(app, [*base, "--data-opt", opt])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (opt, r.output)
    with pytest.raises(ValueError, match="dataset_kwargs apply to a registered dataset name"):
        evaluate(dataset=ListDataset([]), predictions=tmp_path, dataset_kwargs={"a": 1})


def test_main_twice_keeps_python_warnings_working(monkeypatch):
    import warnings

    from depthlab import cli

    monkeypatch.setattr(cli, "app", lambda: None)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    cli.main()
    cli.main()
    text = warnings.formatwarning("x", UserWarning, "/elsewhere/mod.py", 3)
    assert "mod.py:3: UserWarning: x" in text
