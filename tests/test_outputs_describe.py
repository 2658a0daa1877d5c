"""Outputs that describe themselves: colour bar under the colour PNGs, PNG16 text chunks, GeoTIFF band
description/unit/tags, the colour scale in predictions.json; colorize's lookup table equals matplotlib."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from depthlab.outputs import QUANTITY_LABELS, write_outputs
from depthlab.predictor import UNITS, Prediction, predict_files
from depthlab.viz.colorize import colorbar, colorize, get_cmap
from tiny_models import ramp_model, write_ramp_png

pytestmark = [pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Dataset has no geotransform")]


def _ramp(h=48, w=96, lo=1.0, hi=5.0):
    """Depth growing left to right, with a NaN hole."""
    d = np.tile(np.linspace(lo, hi, w, dtype=np.float32), (h, 1))
    d[:4, :4] = np.nan
    return d


def _pred(depth, kind="metric"):
    return Prediction(depth=depth, kind=kind, unit=UNITS[kind], model="toy")


def test_colorize_lut_equals_matplotlib_with_masks_and_nans():
    rng = np.random.default_rng(0)
    d = rng.normal(3, 1, (37, 53))
    d[rng.random(d.shape) < 0.1] = np.nan
    mask = rng.random(d.shape) < 0.9
    for cmap, reverse in (("Spectral_r", True), ("viridis", False), ("magma", True)):
        valid = np.isfinite(d) & mask
        lo, hi = np.percentile(d[valid], (2, 98))
        cm = get_cmap(cmap).reversed() if reverse else get_cmap(cmap)
        expected = np.zeros(d.shape + (3,), np.uint8)
        expected[valid] = cm(np.clip((d[valid] - lo) / (hi - lo), 0, 1), bytes=True)[:, :3]
        np.testing.assert_array_equal(colorize(d, cmap=cmap, mask=mask, reverse=reverse), expected)


def test_colorbar_ramp_ends_labels_and_narrow_widths():
    bar = colorbar(320, (1.0, 5.0), "depth (m)", "viridis")
    lut = get_cmap("viridis")(np.arange(256), bytes=True)[:, :3]
    mid = bar[:, 160].astype(int)
    ramp_rows = np.flatnonzero(mid.max(axis=1) - mid.min(axis=1) > 30)  # coloured, not white or grey text
    assert len(ramp_rows) == ramp_rows[-1] - ramp_rows[0] + 1 >= 8
    row = bar[ramp_rows[0]]
    nonwhite = np.flatnonzero((row != 255).any(axis=1))
    np.testing.assert_array_equal(row[nonwhite[0]], lut[0])  # vmin at the left end
    np.testing.assert_array_equal(row[nonwhite[-1]], lut[-1])  # vmax at the right end
    text = bar[ramp_rows[-1] + 2:]
    dark = (text < 100).all(axis=2)
    thirds = np.array_split(dark, 3, axis=1)
    assert all(t.any() for t in thirds)  # "1", the label and "5" drawn
    assert not np.array_equal(bar, colorbar(320, (1.0, 5.0), "disparity (relative, larger = nearer)", "viridis"))
    narrow = colorbar(24, (1.0, 5.0), "depth (m)")
    assert narrow.shape[1] == 24 and (narrow < 100).all(axis=2).any()  # ends still drawn, label left out
    empty = colorbar(200, None, "depth (m)")
    assert (empty == 128).all(axis=2).any()  # grey ramp without limits


@pytest.mark.parametrize("kind", ["metric", "relative", "disparity"])
def test_color_and_side_carry_the_colour_bar_of_the_scale_in_predictions_json(tmp_path, kind):
    d = _ramp()
    rgb = np.full((3, *d.shape), 0.5, np.float32)
    import torch

    files, entry = write_outputs(_pred(d, kind), torch.from_numpy(rgb), tmp_path, "x", ["color", "side"],
                                 colormap="viridis")
    valid = np.isfinite(d)
    lo, hi = np.percentile(d[valid].astype(np.float64), (2, 98))
    assert (entry["color_vmin"], entry["color_vmax"]) == pytest.approx((lo, hi), rel=1e-12)
    assert entry["colormap"] == "viridis" and entry["color_percentiles"] == [2, 98]
    reverse = kind != "disparity"
    color = np.asarray(Image.open(tmp_path / "x_color.png"))
    h, w = d.shape
    image = colorize(d, cmap="viridis", vmin=entry["color_vmin"], vmax=entry["color_vmax"], reverse=reverse)
    np.testing.assert_array_equal(color[:h], image)  # the image is coloured with the recorded scale
    bar = colorbar(w, (entry["color_vmin"], entry["color_vmax"]), QUANTITY_LABELS[kind], "viridis", reverse)
    np.testing.assert_array_equal(color[h:], bar)  # and the bar under it states that scale and the unit
    side = np.asarray(Image.open(tmp_path / "x_side.png"))
    assert side.shape == (h + bar.shape[0], 2 * w, 3)
    np.testing.assert_array_equal(side[:, w:], color)
    assert (side[:h, :w] == 128).all() and (side[h:, :w] == 255).all()
    meta = Image.open(tmp_path / "x_color.png").text
    assert (meta["kind"], meta["unit"], meta["colormap"]) == (kind, UNITS[kind], "viridis")
    assert (float(meta["vmin"]), float(meta["vmax"])) == (entry["color_vmin"], entry["color_vmax"])


def test_colour_bar_labels_name_the_unit():
    assert "(m)" in QUANTITY_LABELS["metric"]
    assert "relative" in QUANTITY_LABELS["relative"] and "disparity" in QUANTITY_LABELS["disparity"]


@pytest.mark.parametrize("kind", ["metric", "relative"])
def test_png16_text_chunk_decodes_the_file_alone(tmp_path, kind):
    d = _ramp(lo=0.5, hi=9.0)
    write_outputs(_pred(d, kind), None, tmp_path, "x", ["png16"])
    img = Image.open(tmp_path / "x_depth16.png")
    meta = img.text
    assert (meta["kind"], meta["unit"], meta["invalid"], meta["model"]) == (kind, UNITS[kind], "0", "toy")
    v = np.asarray(img).astype(np.float64)
    back = v * float(meta["scale"]) + float(meta["offset"])
    ok = v > 0
    assert (ok == np.isfinite(d)).all()
    tol = 0.0005 if kind == "metric" else (9.0 - 0.5) / 65534
    np.testing.assert_allclose(back[ok], d[ok], atol=tol + 1e-9)
    if kind == "metric":
        assert float(meta["scale"]) == 0.001 and float(meta["offset"]) == 0.0


def test_geotiff_band_description_unit_and_tags(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    for kind in ("metric", "disparity"):
        write_outputs(_pred(_ramp(), kind), None, tmp_path, kind, ["tiff"])
        with rasterio.open(tmp_path / f"{kind}_depth.tif") as src:
            assert src.descriptions[0] == QUANTITY_LABELS[kind]
            assert src.units[0] == UNITS[kind]
            assert src.tags(1)["kind"] == kind and src.tags()["kind"] == kind
            assert src.tags()["model"] == "toy" and src.tags()["software"].startswith("depthlab")


def test_predictions_json_records_the_colour_scale(tmp_path):
    model = ramp_model("metric")
    write_ramp_png(tmp_path / "ramp.png")
    predict_files([tmp_path / "ramp.png"], model=model, out_dir=tmp_path / "o", formats="npy,color", io_workers=1)
    entry = json.loads((tmp_path / "o" / "predictions.json").read_text())["files"]["ramp"]
    d = np.load(tmp_path / "o" / "ramp.npy").astype(np.float64)
    assert (entry["color_vmin"], entry["color_vmax"]) == pytest.approx(tuple(np.percentile(d, (2, 98))), rel=1e-12)
    color = np.asarray(Image.open(tmp_path / "o" / "ramp_color.png"))[: d.shape[0]]
    np.testing.assert_array_equal(color, colorize(d, vmin=entry["color_vmin"], vmax=entry["color_vmax"], reverse=True))
