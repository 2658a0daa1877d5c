"""`depthlab aerial prepare`: portal downloads (DSM/DTM GeoTIFF, XYZ grids, LAZ) -> aligned nDSM chips.

Expected heights are computed by hand: tiny rasters with chosen cell values, and the portal fixture's scene
(planar ground, 12 m and 8 m flat-roofed buildings, a 6 m tree, a pit below the terrain that is clipped to 0)
written in CRSs that differ from the orthophotos'.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
laspy = pytest.importorskip("laspy")
pytest.importorskip("lazrs")
pytest.importorskip("pyogrio")
pytest.importorskip("shapely")
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # affine `*` inside rasterio
from rasterio.transform import from_origin  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from depthlab.cli import app  # noqa: E402
from depthlab.data import create_dataset  # noqa: E402
from depthlab.data.aerial_prepare import chip_ndsm, prepare_aerial, spatial_split  # noqa: E402
from depthlab.data.aerial_sources import lidar_surfaces, read_xyz_grid  # noqa: E402
from depthlab.data.fixtures import PORTAL_ORIGIN, write_fixture  # noqa: E402
from depthlab.errors import DataError  # noqa: E402

X0, Y0 = 350000.0, 5650000.0  # EPSG:25832; EPSG:4647 is the same projection with easting + 32,000,000


def write_tif(path, bands, crs, transform, nodata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = bands if bands.ndim == 3 else bands[None]
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=bands.shape[0],
                       dtype=bands.dtype.name, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(bands)


def read_band(path):
    with rasterio.open(path) as src:
        return src.read(1), src


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    return write_fixture("aerial_portal", tmp_path_factory.mktemp("portal") / "inputs")


# ------------------------------------------------------------------------------------------ nDSM by hand
@pytest.fixture()
def hand_inputs(tmp_path):
    """A 1 m DSM GeoTIFF and a 1 m DTM XYZ grid in EPSG:4647 over a 0.5 m orthophoto in EPSG:25832 (4x6 m)."""
    dsm = np.array([[70, 71, 72, 73, 74, 75],
                    [60, 61, 62, 63, 64, -9999],
                    [55, 55, 55, 55, 55, 55],
                    [58, 59, 50, 51, 52, 53]], np.float32)
    dtm = np.array([[50, 50, 50, 50, 50, 50],
                    [51, 51, 51, 51, 51, 51],
                    [52, 52, 52, 52, 52, 52],
                    [53, 53, 53, 53, 53, 53]], np.float32)
    write_tif(tmp_path / "dsm.tif", dsm, "EPSG:4647", from_origin(X0 + 32e6, Y0 + 4, 1.0, 1.0), nodata=-9999.0)
    lines = [f"{X0 + 32e6 + c + 0.5:.2f} {Y0 + 4 - r - 0.5:.2f} {dtm[r, c]:.2f}" for c in range(6) for r in range(4)]
    (tmp_path / "dtm.xyz").write_text("\n".join(lines[::-1]) + "\n")  # any line order
    rgb = np.full((3, 8, 12), 100, np.uint8)
    write_tif(tmp_path / "ortho" / "t.tif", rgb, "EPSG:25832", from_origin(X0, Y0 + 4, 0.5, 0.5))
    return tmp_path, dsm, dtm


def test_ndsm_matches_hand_computed_cells_across_crs(hand_inputs):
    root, dsm, dtm = hand_inputs
    r = prepare_aerial(root / "out", [root / "ortho"], [root / "dsm.tif"], [root / "dtm.xyz"], height_crs="EPSG:4647",
                       chip_size=100, resampling="nearest", fractions=(0, 0, 1))
    assert r.counts == {"train": 0, "val": 0, "test": 1}
    h, src = read_band(root / "out" / "height" / "t_r0_c0.tif")
    cells = np.array([[20, 21, 22, 23, 24, 25],       # DSM - DTM per 1 m cell, by hand
                      [9, 10, 11, 12, 13, np.nan],    # nodata in the DSM stays nodata
                      [3, 3, 3, 3, 3, 3],
                      [5, 6, 0, 0, 0, 0]], np.float32)  # 50-53 < 0: clipped to ground
    np.testing.assert_allclose(h, np.kron(cells, np.ones((2, 2), np.float32)), atol=1e-4)
    assert src.crs.to_epsg() == 25832 and src.transform == from_origin(X0, Y0 + 4, 0.5, 0.5)
    rgb, _ = read_band(root / "out" / "rgb" / "t_r0_c0.tif")
    assert (rgb == 100).all()


def test_chip_ndsm_clips_and_carries_nodata():
    h = chip_ndsm(np.array([[5.0, 1.0, np.nan]]), np.array([[2.0, 3.0, 1.0]]), valid=np.array([[True, True, True]]))
    np.testing.assert_array_equal(h, [[3.0, 0.0, np.nan]])
    assert np.isnan(chip_ndsm(np.array([[5.0]]), np.array([[2.0]]), valid=np.array([[False]]))).all()


# ------------------------------------------------------------------------------------------ XYZ and LAZ
def test_xyz_grid_any_order_missing_cells_and_separators(tmp_path):
    pts = [(10.5, 21.5, 1.0), (11.5, 21.5, 2.0), (12.5, 21.5, 3.0), (10.5, 20.5, 4.0), (12.5, 20.5, 6.0)]
    (tmp_path / "g.xyz").write_text("x;y;z\n" + "".join(f"{x};{y};{z}\n" for x, y, z in reversed(pts)))
    grid, tf = read_xyz_grid(tmp_path / "g.xyz")
    np.testing.assert_array_equal(grid, [[1, 2, 3], [4, np.nan, 6]])  # (11.5, 20.5) has no line: NaN, not 0
    assert tuple(tf)[:6] == (1.0, 0.0, 10.0, 0.0, -1.0, 22.0)       # cell centres -> corner origin
    (tmp_path / "bad.xyz").write_text("0 0 1\n1 0 1\n2.5 0 1\n")
    with pytest.raises(DataError, match="bad.xyz: x coordinates are not on a regular grid"):
        read_xyz_grid(tmp_path / "bad.xyz")


def write_laz(path, x, y, z, cls, wkt=None):
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.offsets, header.scales = [0.0, 0.0, 0.0], [0.001, 0.001, 0.001]
    if wkt:
        from laspy.vlrs.known import WktCoordinateSystemVlr
        header.vlrs.append(WktCoordinateSystemVlr(wkt))
        header.global_encoding.wkt = True
    las = laspy.LasData(header)
    las.x, las.y, las.z, las.classification = (*(np.asarray(v, np.float64) for v in (x, y, z)), np.asarray(cls, np.uint8))
    las.write(path)


def test_lidar_surfaces_by_hand(tmp_path):
    """2 m cells over x 0..6, y 0..4: DSM = highest non-noise return, DTM = mean ground, holes from the TIN."""
    from rasterio.crs import CRS

    x = [0.5, 1.5, 0.5, 2.5, 4.5, 5.5, 4.5, 1.0, 5.0, 3.0]
    y = [3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 0.5, 1.0, 1.5, 1.0]
    z = [10., 12., 11., 30., 14., 16., 20., 99., 40., 5.]
    c = [2, 2, 5, 6, 2, 2, 2, 18, 5, 1]
    write_laz(tmp_path / "p.laz", x, y, z, c, wkt=CRS.from_epsg(25832).to_wkt())
    s = lidar_surfaces(tmp_path / "p.laz", resolution=2.0)
    assert s.crs.to_epsg() == 25832 and tuple(s.transform)[:6] == (2.0, 0.0, 0.0, 0.0, -2.0, 4.0)
    np.testing.assert_allclose(s.dsm, [[12, 30, 16], [np.nan, 5, 40]])  # the 99 m noise point (18) is ignored
    # ground means (row, col): (0,0)=11, (0,2)=15, (1,2)=20. (0,1) lies on the TIN's edge (0,0)-(0,2): linear, 13;
    # (1,0) and (1,1) are outside the triangle (c < 2r): nearest ground cell, (0,0) resp. (1,2)
    np.testing.assert_allclose(s.dtm, [[11, 13, 15], [11, 20, 20]])
    write_laz(tmp_path / "nocrs.laz", x, y, z, c)
    with pytest.raises(DataError, match="nocrs.laz: point cloud declares no CRS"):
        lidar_surfaces(tmp_path / "nocrs.laz")
    write_laz(tmp_path / "noground.laz", x, y, z, [1] * len(x), wkt=CRS.from_epsg(25832).to_wkt())
    with pytest.raises(DataError, match=r"noground.laz: no ground-class \(2\) points"):
        lidar_surfaces(tmp_path / "noground.laz")


# ------------------------------------------------------------------------------------------ the portal fixture
def height_at(root, point) -> float:
    """nDSM at an EPSG:25832 point given relative to PORTAL_ORIGIN, from the first written chip holding it."""
    x, y = PORTAL_ORIGIN[0] + point[0], PORTAL_ORIGIN[1] + point[1]
    chips = json.loads((root / "prepare.json").read_text())["chips"]
    name = next(c["name"] for c in chips if not c["dropped"] and c["bounds"][0] <= x < c["bounds"][2]
                and c["bounds"][1] <= y < c["bounds"][3])
    h, src = read_band(root / "height" / f"{name}.tif")
    return float(h[src.index(x, y)])


# (point, nDSM): inside the 12 m and the 8 m roof, open ground, the pit (DSM 2 m below the DTM: clipped to 0)
HAND = [((20.0, 20.0), 12.0), ((70.0, 30.0), 8.0), ((44.0, 40.0), 0.0), ((39.0, 7.0), 0.0)]


def test_prepare_rasters_in_other_crss_via_cli(portal, tmp_path):
    """DSM GeoTIFF in EPSG:25833 + DTM XYZ in EPSG:4647 onto EPSG:25832 orthophotos, through the CLI."""
    out = tmp_path / "ds"
    res = CliRunner().invoke(app, ["aerial", "prepare", "--out", str(out), "--ortho", str(portal / "ortho"),
                                   "--dsm", str(portal / "dsm" / "dom1.tif"), "--dtm", str(portal / "dtm" / "dgm1.xyz"),
                                   "--height-crs", "EPSG:4647", "--chip-size", "48", "--block-size", "24",
                                   "--buffer", "-1", "--categories", str(portal / "areas.geojson")])
    assert res.exit_code == 0, res.output
    for point, expected in HAND:
        assert height_at(out, point) == pytest.approx(expected, abs=0.02), point
    assert np.isnan(height_at(out, (49.0, 47.0)))  # orthophoto nodata -> height nodata
    assert np.isnan(height_at(out, (95.0, 30.0)))  # east of the DSM's extent
    assert (out / "sources" / "dtm_001_dgm1.tif").is_file()               # the XYZ grid as a GeoTIFF
    cats = dict(line.split(",") for line in (out / "categories.csv").read_text().split()[1:])
    assert cats["dop_a_r0_c0"] == "residential" and cats["dop_b_r48_c48"] == "industrial"
    ds = create_dataset("aerial", root=out, split="train")  # the dataset reads what prepare wrote
    s = ds[0]
    assert s["image"].shape == (3, 48, 48) and s["meta"]["crs"] == "EPSG:25832"
    assert s["meta"]["category"] == cats[s["meta"]["name"]]


def test_prepare_laz_and_tile_csv(portal, tmp_path):
    """A LAZ in EPSG:25833: roofs over interpolated ground, the tree, noise ignored; 16-bit RGBI kept."""
    r = prepare_aerial(tmp_path / "ds", [portal / "ortho"], laz=[portal / "lidar" / "points.laz"], chip_size=48,
                       block_size=24, buffer=None, categories=portal / "tiles.csv")
    for point, expected in HAND[:3] + [((86.0, 10.0), 6.0)]:  # + the tree
        assert height_at(r.root, point) == pytest.approx(expected, abs=0.03), point
    assert sum(r.counts.values()) == 8 and not r.dropped
    cats = (r.root / "categories.csv").read_text()
    assert "dop_a_r0_c0,industrial" in cats and "dop_b_r0_c0,residential" in cats  # the CSV, not the polygons
    with rasterio.open(r.root / "rgb" / "dop_b_r48_c48.tif") as src:
        assert src.count == 4 and src.dtypes[0] == "uint16" and src.nodata == 0
    manifest = json.loads(r.manifest.read_text())
    assert [s["role"] for s in manifest["sources"]] == ["DSM", "DTM"]
    assert manifest["sources"][0]["path"] == "sources/dsm_000_points.tif"


def test_extent_mismatch_names_both_files(portal, tmp_path):
    """The XYZ told to be in EPSG:25832 (it is EPSG:4647): no overlap, one line naming both files."""
    with pytest.raises(DataError) as e:
        prepare_aerial(tmp_path / "ds", [portal / "ortho" / "dop_a.tif"], [portal / "dsm" / "dom1.tif"],
                       [portal / "dtm" / "dgm1.xyz"], height_crs="EPSG:25832")
    msg = str(e.value)
    assert msg.startswith(f"{portal / 'ortho' / 'dop_a.tif'}: does not overlap DTM {portal / 'dtm' / 'dgm1.xyz'}")
    assert "EPSG:25832" in msg and "\n" not in msg
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()  # nothing half-written


def test_crs_mislabel_hint_and_missing_crs(hand_inputs):
    root, dsm, _ = hand_inputs
    write_tif(root / "dsm_utm33.tif", dsm, "EPSG:25833", from_origin(X0, Y0 + 4, 1.0, 1.0))  # 25832 numbers
    with pytest.raises(DataError, match="its coordinates would overlap read as EPSG:25832: is its CRS"):
        prepare_aerial(root / "a", [root / "ortho"], [root / "dsm_utm33.tif"], [root / "dtm.xyz"],
                       height_crs="EPSG:4647")
    write_tif(root / "dsm_nocrs.tif", dsm, None, from_origin(X0, Y0 + 4, 1.0, 1.0))
    with pytest.raises(DataError, match=r"dsm_nocrs.tif: DSM has no CRS, so it cannot be placed on .*t.tif"):
        prepare_aerial(root / "b", [root / "ortho"], [root / "dsm_nocrs.tif"], [root / "dtm.xyz"],
                       height_crs="EPSG:4647")
    with pytest.raises(DataError, match="dtm.xyz: an XYZ grid carries no CRS"):
        prepare_aerial(root / "c", [root / "ortho"], [root / "dsm.tif"], [root / "dtm.xyz"])


def test_gpkg_categories_and_unknown_class(hand_inputs):
    import pyogrio.raw
    import shapely

    root, _, _ = hand_inputs
    boxes = [shapely.box(X0, Y0, X0 + 4.5, Y0 + 4), shapely.box(X0 + 4.5, Y0, X0 + 6, Y0 + 4)]
    for name, labels in (("ok.gpkg", ["residential", "industrial"]), ("bad.gpkg", ["residential", "forest"])):
        pyogrio.raw.write(root / name, shapely.to_wkb(boxes), [np.array(labels, dtype=object)], ["landuse"],
                          driver="GPKG", geometry_type="Polygon", crs="EPSG:25832")
    r = prepare_aerial(root / "out", [root / "ortho"], [root / "dsm.tif"], [root / "dtm.xyz"], height_crs="EPSG:4647",
                       categories=root / "ok.gpkg", category_field="landuse", chip_size=100)
    assert (r.root / "categories.csv").read_text() == "name,category\nt_r0_c0,residential\n"  # 75 % of its pixels
    with pytest.raises(DataError, match=r"bad.gpkg: landuse values \['forest'\] are not categories"):
        prepare_aerial(root / "out2", [root / "ortho"], [root / "dsm.tif"], [root / "dtm.xyz"],
                       height_crs="EPSG:4647", categories=root / "bad.gpkg", category_field="landuse")


def test_existing_output_needs_overwrite(hand_inputs):
    root, _, _ = hand_inputs
    (root / "out").mkdir()
    (root / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        prepare_aerial(root / "out", [root / "ortho"], [root / "dsm.tif"], [root / "dtm.xyz"], height_crs="EPSG:4647")


# ------------------------------------------------------------------------------------------ spatial split
def grid_chips(n: int, size: float = 10.0) -> np.ndarray:
    """n x n touching chips of ``size`` m, row-major, as (left, bottom, right, top)."""
    return np.array([(c * size, r * size, (c + 1) * size, (r + 1) * size) for r in range(n) for c in range(n)])


def touching_pairs(bounds, splits, dropped):
    kept = [i for i in range(len(bounds)) if not dropped[i]]
    out = []
    for a in kept:
        for b in kept:
            l1, b1, r1, t1 = bounds[a]
            l2, b2, r2, t2 = bounds[b]
            if a < b and splits[a] != splits[b] and l1 <= r2 and l2 <= r1 and b1 <= t2 and b2 <= t1:
                out.append((a, b))
    return out


def test_spatial_split_blocks_and_buffer():
    b = grid_chips(8)  # 8x8 chips of 10 m; blocks of 20 m = 2x2 chips
    splits, blocks, dropped = spatial_split(b, block_size=20.0, fractions=(0.5, 0.25, 0.25), seed=3, buffer=None)
    by_block = {}
    for s, blk in zip(splits, blocks):
        by_block.setdefault(blk, set()).add(s)
    assert len(by_block) == 16 and all(len(v) == 1 for v in by_block.values())  # a block is never cut
    assert [splits.count(s) for s in ("train", "val", "test")] == [32, 16, 16]
    assert touching_pairs(b, splits, dropped)  # without a buffer, blocks of different splits touch...
    splits, _, dropped = spatial_split(b, block_size=20.0, fractions=(0.5, 0.25, 0.25), seed=3, buffer=0.0)
    assert touching_pairs(b, splits, dropped) == []  # ...with buffer 0 no kept chip touches another split
    assert not any(d for s, d in zip(splits, dropped) if s == "test")  # test blocks stay whole
    assert spatial_split(b, 20.0, seed=3)[0] == spatial_split(b, 20.0, seed=3)[0]


def test_spatial_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions must be three"):
        spatial_split(grid_chips(2), 10.0, fractions=(1.0, 0.0))


def test_cli_error_is_one_line_exit_2(portal, tmp_path):
    res = CliRunner().invoke(app, ["aerial", "prepare", "--out", str(tmp_path / "ds"), "--ortho", str(portal / "ortho"),
                                   "--dsm", str(portal / "dsm" / "dom1.tif"), "--dtm", str(portal / "dtm" / "dgm1.xyz")])
    assert res.exit_code == 2
    assert "dgm1.xyz: an XYZ grid carries no CRS: pass height_crs" in " ".join(res.output.split())


def test_fill_gaps_is_exact_on_planar_ground():
    """A building-sized gap and scattered missing cells in planar ground come back exactly; a gap at the
    border (outside the ground cells' hull) takes the nearest ground cell."""
    from depthlab.data.aerial_sources import fill_gaps

    plane = np.add.outer(0.5 * np.arange(30), 0.25 * np.arange(40)).astype(np.float32) + 60
    g = plane.copy()
    g[10:20, 12:30] = np.nan
    g[np.random.default_rng(0).random(g.shape) < 0.1] = np.nan
    g[0, 0] = plane[0, 0]  # keep the corners so the hull is the whole grid
    g[0, -1], g[-1, 0], g[-1, -1] = plane[0, -1], plane[-1, 0], plane[-1, -1]
    np.testing.assert_allclose(fill_gaps(g), plane, atol=1e-4)
    edge = plane.copy()
    edge[:, :3] = np.nan
    np.testing.assert_allclose(fill_gaps(edge)[:, :3], np.repeat(plane[:, 3:4], 3, axis=1), atol=1e-4)


def test_prepared_split_has_no_touching_chips_across_splits(portal, tmp_path):
    """End to end with the default buffer: the written split lists hold whole blocks and no chip of one split
    touches a chip of another (bounds from prepare.json)."""
    r = prepare_aerial(tmp_path / "ds", [portal / "ortho"], laz=[portal / "lidar" / "points.laz"], chip_size=16,
                       block_size=16)
    chips = [c for c in json.loads(r.manifest.read_text())["chips"] if not c["dropped"]]
    listed = {s: set((r.root / "splits" / f"{s}.txt").read_text().split()) for s in ("train", "val", "test")}
    assert all(c["name"] in listed[c["split"]] for c in chips) and all(listed.values())
    b = np.array([c["bounds"] for c in chips])
    assert touching_pairs(b, [c["split"] for c in chips], [False] * len(chips)) == []
    assert len(chips) + len(r.dropped) == 72 and all("buffer" in why for why in r.dropped.values())
