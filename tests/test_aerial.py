"""Aerial orthophoto + LiDAR height dataset on GeoTIFF fixtures written with rasterio."""
from __future__ import annotations

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # affine `*` inside rasterio
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from depthlab.data import create_dataset, list_datasets  # noqa: E402
from depthlab.errors import DataError  # noqa: E402

CRS_UTM32 = CRS.from_epsg(25832)
ORIGIN = (500000.0, 5600000.0)  # top-left corner, metres (ETRS89 / UTM 32N)
PIXEL = 0.5  # metres per pixel
NODATA = -9999.0


def write_tif(path, bands: np.ndarray, crs=CRS_UTM32, transform=None, nodata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = bands if bands.ndim == 3 else bands[None]
    c, h, w = bands.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=bands.dtype.name, crs=crs,
                       transform=transform or from_origin(*ORIGIN, PIXEL, PIXEL), nodata=nodata) as dst:
        dst.write(bands)


def rgb_bands(h, w, count=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    return rng.integers(0, hi + 1, size=(count, h, w)).astype(dtype)


@pytest.fixture()
def aerial_root(tmp_path):
    """Two tiles: 'a' (6x8, uint8 RGB) and 'b' (6x8, uint16 RGBA); heights row*10+col+1 with nodata/ground."""
    h, w = 6, 8
    heights = (np.arange(h)[:, None] * 10 + np.arange(w)[None, :] + 1).astype(np.float32)
    heights[0, 0] = NODATA  # no LiDAR return
    heights[0, 1] = 0.0  # bare ground: 0 = missing under the depthlab convention
    write_tif(tmp_path / "rgb" / "a.tif", rgb_bands(h, w))
    write_tif(tmp_path / "height" / "a.tif", heights, nodata=NODATA)
    write_tif(tmp_path / "rgb" / "b.tif", rgb_bands(h, w, count=4, dtype=np.uint16, seed=1))
    write_tif(tmp_path / "height" / "b.tif", heights * 2, nodata=NODATA)
    (tmp_path / "categories.csv").write_text("name,category\na,residential\nb,industrial\n")
    return tmp_path, heights


def test_ground_height_keeps_bare_ground_as_a_target(aerial_root):
    """ground_height=0.01: the 0 m ground pixel becomes a valid 0.01 m target; nodata stays invalid."""
    root, _ = aerial_root
    s = create_dataset("aerial", root=root, split="test", ground_height=0.01)[0]
    depth, mask = s["depth"][0].numpy(), s["mask"][0].numpy()
    assert mask[0, 1] and depth[0, 1] == pytest.approx(0.01)
    assert not mask[0, 0] and depth[0, 0] == 0.0
    assert depth[2, 3] == 24.0 and mask.sum() == 6 * 8 - 1


def test_registered():
    assert "aerial" in list_datasets()


def test_values_mask_category_and_georeferencing(aerial_root):
    root, heights = aerial_root
    ds = create_dataset("aerial", root=root, split="test")
    assert ds.names == ["a", "b"]
    s = ds[0]
    assert s["image"].shape == (3, 6, 8) and s["image"].dtype == torch.float32
    with rasterio.open(root / "rgb" / "a.tif") as src:
        expect_rgb = src.read().astype(np.float32) / 255.0
    np.testing.assert_allclose(s["image"].numpy(), expect_rgb, rtol=0, atol=1e-7)
    depth, mask = s["depth"][0].numpy(), s["mask"][0].numpy()
    assert depth[2, 3] == 24.0 and depth[5, 7] == 58.0  # row*10 + col + 1, metres
    assert not mask[0, 0] and depth[0, 0] == 0.0  # nodata -> invalid, zeroed
    assert not mask[0, 1]  # ground (0) -> invalid
    assert mask.sum() == 6 * 8 - 2
    meta = s["meta"]
    assert meta["category"] == "residential" and meta["dataset"] == "aerial"
    assert meta["crs"] == "EPSG:25832"
    assert meta["transform"] == [PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1]]
    assert meta["target"] == "height_above_ground"
    # uint16 RGBA: alpha dropped, /65535
    b = ds[1]
    with rasterio.open(root / "rgb" / "b.tif") as src:
        expect_b = src.read()[:3].astype(np.float32) / 65535.0
    np.testing.assert_allclose(b["image"].numpy(), expect_b, atol=1e-7)
    assert b["meta"]["category"] == "industrial" and b["depth"][0, 2, 3] == 48.0


def test_tiling_windows_transforms_and_values(aerial_root):
    root, heights = aerial_root
    ds = create_dataset("aerial", root=root, tile_size=4, categories=["residential"])
    # 6x8 raster, tile 4: rows start at 0 and 2 (shifted back to the edge), columns at 0 and 4
    assert ds.names == ["a_r0_c0", "a_r0_c4", "a_r2_c0", "a_r2_c4"]
    s = ds[3]
    assert s["depth"].shape == (1, 4, 4)
    np.testing.assert_array_equal(s["depth"][0].numpy(), heights[2:6, 4:8])
    assert s["meta"]["window"] == (4, 2, 4, 4)
    # the tile's own transform: origin moved by (4 cols, 2 rows) pixels
    assert s["meta"]["transform"] == [PIXEL, 0.0, ORIGIN[0] + 4 * PIXEL, 0.0, -PIXEL, ORIGIN[1] - 2 * PIXEL]
    with rasterio.open(root / "rgb" / "a.tif") as src:
        np.testing.assert_allclose(s["image"].numpy(), src.read()[:, 2:6, 4:8] / 255.0, atol=1e-7)


def test_splits_and_category_filter(aerial_root):
    root, _ = aerial_root
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("b\n")
    (root / "splits" / "test.txt").write_text("# held out\na.tif\n")
    assert create_dataset("aerial", root=root, split="train").names == ["b"]
    assert create_dataset("aerial", root=root, split="test").names == ["a"]
    assert create_dataset("aerial", root=root, split="train", categories="residential").names == []
    with pytest.raises(FileNotFoundError, match="val.txt"):
        create_dataset("aerial", root=root, split="val")
    with pytest.raises(ValueError, match="unknown aerial category.*'forest'"):
        create_dataset("aerial", root=root, categories=["forest"])


def test_mismatched_rasters_give_one_line_error_naming_both(aerial_root):
    root, heights = aerial_root
    write_tif(root / "rgb" / "c.tif", rgb_bands(6, 8))
    write_tif(root / "height" / "c.tif", heights, transform=from_origin(ORIGIN[0] + 1.0, ORIGIN[1], PIXEL, PIXEL))
    write_tif(root / "rgb" / "d.tif", rgb_bands(6, 8))
    write_tif(root / "height" / "d.tif", heights, crs=CRS.from_epsg(4326))
    write_tif(root / "rgb" / "e.tif", rgb_bands(6, 8))  # no height raster
    ds = create_dataset("aerial", root=root)
    with pytest.raises(DataError) as e:
        ds[ds.names.index("c")]
    msg = str(e.value)
    assert "\n" not in msg and "rgb/c.tif" in msg and "height/c.tif" in msg and "transform" in msg
    with pytest.raises(DataError, match=r"rgb/d\.tif: not co-registered with .*height/d\.tif: CRS"):
        ds[ds.names.index("d")]
    with pytest.raises(DataError, match=r"height/e\.tif: file not found"):
        ds[ds.names.index("e")]
    assert ds[0]["meta"]["name"] == "a"  # the good items still load


def test_two_band_orthophoto_is_rejected(aerial_root):
    root, heights = aerial_root
    write_tif(root / "rgb" / "a.tif", rgb_bands(6, 8, count=2))
    with pytest.raises(DataError, match="3 or 4 bands, got 2"):
        create_dataset("aerial", root=root)[0]


def test_prediction_on_a_tile_written_back_as_georeferenced_geotiff(aerial_root, tmp_path):
    from depthlab.geo import Georef, read_geotiff, write_geotiff

    root, heights = aerial_root
    s = create_dataset("aerial", root=root, tile_size=4)[3]
    out = write_geotiff(tmp_path / "tile.tif", s["depth"][0].numpy(), Georef.from_meta(s["meta"]))
    values, g, nodata = read_geotiff(out)
    np.testing.assert_array_equal(values, heights[2:6, 4:8])
    assert g.to_meta()["crs"] == "EPSG:25832" and g.to_meta()["transform"] == s["meta"]["transform"]
    assert (g.width, g.height) == (4, 4) and np.isnan(nodata)


def test_read_rgb_raster_reads_16_bit_orthophotos(aerial_root):
    from depthlab.geo import read_rgb_raster

    root, _ = aerial_root
    t = read_rgb_raster(root / "rgb" / "b.tif", rgb_max=4095)
    with rasterio.open(root / "rgb" / "b.tif") as src:
        raw = src.read()[:3].astype(np.float32)
    np.testing.assert_allclose(t.numpy(), np.clip(raw / 4095, 0, 1), atol=1e-7)
    with pytest.raises(DataError, match="nothing.tif: file not found"):
        read_rgb_raster(root / "rgb" / "nothing.tif")
