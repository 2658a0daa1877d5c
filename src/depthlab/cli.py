"""The ``depthlab`` command line: every command parses its arguments and calls ONE library function."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from depthlab.errors import DepthlabError, first_line

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="depthlab: monocular depth estimation -- data, models, training, evaluation, reports.")
console = Console()
err_console = Console(stderr=True)
JSON_HELP = "print the result as JSON on stdout (messages go to stderr)"


def _version(value: bool):
    if value:
        from depthlab import __version__

        typer.echo(f"depthlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                               help="print depthlab's version and exit")):
    """depthlab: monocular depth estimation -- data, models, training, evaluation, reports."""


def _parse_size(text: Optional[str]):
    """``--input-size``: auto (when not given) | native | model | keep-aspect | N | HxW -> Predictor input_size."""
    from depthlab.predictor import parse_input_size

    try:
        return "auto" if text is None else parse_input_size(text, "--input-size")
    except ValueError as e:
        _fail(str(e))


INPUT_SIZE_HELP = ("network input size: auto (default: the trained size when the weights declare one, else "
                   "native), native (image size padded to the model's multiple), model (the size the weights were "
                   "trained at, e.g. FastDepth 224x224), keep-aspect (the trained size's short side, the "
                   "image's aspect ratio), N (short side) or HxW")


BACKEND_HELP = ("what runs the network: auto (default, or $DEPTHLAB_BACKEND: ONNX Runtime when installed and its "
                "export verifies against PyTorch, else PyTorch in channels_last), eager (PyTorch) or onnx")


def _key_values(items: Optional[List[str]], flag: str) -> dict:
    """``["k=v", ...]`` -> ``{k: yaml(v)}``; a one-line usage error for an item without ``=``. Values are read
    by :func:`depthlab.config.load_yaml` (safe, alias bombs refused) like every YAML depthlab reads."""
    import yaml

    from depthlab.config import load_yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            _fail(f"{flag} {item!r}: expected KEY=VALUE")
        if key in ("root", "split"):
            _fail(f"{flag} {key}=...: use --{key}")
        try:
            out[key] = load_yaml(value)
        except (yaml.YAMLError, ValueError) as e:
            _fail(f"{flag} {item!r}: value is not valid YAML ({first_line(e)})")
    return out


def _print_json(data) -> None:
    """``--json``: the data as JSON on stdout, nothing else there (messages go to stderr)."""
    from depthlab.io import json_text

    typer.echo(json_text(data))


def _fail(msg: str, code: int = 2):
    from rich.markup import escape  # messages hold brackets ("pip install 'depthlab[video]'") rich would eat

    err_console.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def command(name: str, on: typer.Typer | None = None):
    """``app.command(name)`` (or ``on.command(name)`` for a sub-app) whose body runs under the CLI's one error
    policy: a :class:`DepthlabError` is the user's (one line, exit status 2); any other exception is a bug and
    keeps its traceback. Every command uses it; none catches exceptions itself."""

    def deco(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except DepthlabError as e:
                _fail(first_line(e))

        return (on or app).command(name)(run)

    return deco


@command("eval")
def eval_cmd(
    dataset: str = typer.Option(..., help="registered dataset name (see `depthlab datasets`) or 'folder'"),
    root: Optional[Path] = typer.Option(None, help="dataset root folder (or file, e.g. the NYU .mat)"),
    split: str = typer.Option("test", help="dataset split"),
    model: Optional[str] = typer.Option(None, help="registered model name to run"),
    checkpoint_path: Optional[Path] = typer.Option(None, help="weights for --model (local file)"),
    checkpoint: Optional[Path] = typer.Option(None, help="a depthlab checkpoint (rebuilds its own model)"),
    predictions: Optional[Path] = typer.Option(None, help="folder of predictions (.npy metres or 16-bit .png), matched by stem"),
    pred_scale: Optional[float] = typer.Option(None, help="16-bit PNG predictions: metres per unit (e.g. 0.001 for mm)"),
    pred_kind: Optional[str] = typer.Option(None, help="what --predictions hold: metric | relative | disparity "
                                            "(default: from the folder's predictions.json, else metric)"),
    protocol: str = typer.Option("none", help="evaluation protocol preset (see `depthlab protocols`)"),
    out: Optional[Path] = typer.Option(None, help="write the results JSON here (atomically)"),
    device: str = typer.Option("cpu"),
    limit: Optional[int] = typer.Option(None, help="evaluate only the first N samples"),
    input_size: Optional[str] = typer.Option(None, help=INPUT_SIZE_HELP),
    data_opt: Optional[List[str]] = typer.Option(None, "--data-opt", help="dataset option KEY=VALUE (YAML value), "
                                                 "repeatable, e.g. --data-opt gt_root=/data/kitti_gt"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    backend: Optional[str] = typer.Option(None, help=BACKEND_HELP),
):
    """Evaluate predictions or a model on a dataset under a named protocol.

    Exit status: 0 when at least one image was scored, 1 when none was, 2 on a usage or input error."""
    from depthlab.evaluation.runner import evaluate, format_markdown

    from depthlab.data import DatasetOptionError

    try:
        result = evaluate(dataset=dataset, root=root, split=split, model=model, checkpoint_path=checkpoint_path,
                          checkpoint=checkpoint, predictions=predictions, pred_scale=pred_scale, pred_kind=pred_kind,
                          protocol=protocol, out=out, device=device, limit=limit, progress=True,
                          input_size=_parse_size(input_size), dataset_kwargs=_key_values(data_opt, "--data-opt"),
                          backend=backend)
    except DatasetOptionError as e:  # a user error like any other, but its option came from --data-opt
        _fail(f"--data-opt: {first_line(e)}")
    if as_json:
        _print_json(result)
    else:
        from depthlab.report.terminal import print_markdown

        print_markdown(console, format_markdown(result))
    for name, reason in result.get("skipped", {}).items():
        err_console.print(f"[yellow]skipped[/yellow] {name}: {reason}", highlight=False, soft_wrap=True)
    if out:
        err_console.print(f"wrote {out}", highlight=False, soft_wrap=True, markup=False)
    if not result["summary"].get("n_images"):
        _fail("no image was scored (see the skipped reasons above)", code=1)


@command("protocols")
def protocols_cmd():
    """List evaluation protocol presets with all their settings."""
    from depthlab.evaluation.protocols import list_protocols, get_protocol

    for name in list_protocols():
        console.print(f"[bold]{name}[/bold]: {get_protocol(name).describe()}", highlight=False, soft_wrap=True)


@command("datasets")
def datasets_cmd():
    """List registered datasets."""
    from depthlab.data import describe_datasets

    for name, doc in describe_datasets().items():
        console.print(f"[bold]{name}[/bold]: {doc}", highlight=False, soft_wrap=True)


@command("models")
def models_cmd(
    pattern: str = typer.Argument("*", help="shell-style filter on model names"),
    cost: bool = typer.Option(False, "--cost/--no-cost", help="also build every network to count params and "
                              "GMACs for a 480x640 image (minutes for the whole zoo; progress on stderr)"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON instead of a table"),
):
    """The model zoo as a table: output kind, input size, local weights, licence (--cost: params, GMACs)."""
    from depthlab.models.zoo import print_zoo_table, zoo_rows

    if as_json:
        _print_json(zoo_rows(pattern, with_cost=cost))
    else:
        print_zoo_table(pattern, with_cost=cost, console=console, status_console=err_console)


@command("predict")
def predict_cmd(
    inputs: List[str] = typer.Argument(..., help="image files, folders or globs; video files (.mp4, .mov, ...)"),
    model: str = typer.Option(..., help="registered model name"),
    checkpoint_path: Optional[Path] = typer.Option(None, help="local weights file for --model"),
    pretrained: bool = typer.Option(True, help="load the model's published/bundled weights"),
    out: Path = typer.Option(Path("outputs/predict"), help="output folder"),
    formats: str = typer.Option("npy,png16,color", help="comma list of: npy, png16, color, side, tiff, ply"),
    colormap: str = typer.Option("Spectral_r", help="matplotlib colormap of the colourised PNGs"),
    batch_size: int = typer.Option(1),
    device: str = typer.Option("cpu"),
    input_size: Optional[str] = typer.Option(None, help=INPUT_SIZE_HELP),
    intrinsics: Optional[str] = typer.Option(None, help="ply: camera fx,fy,cx,cy in pixels (default: a sidecar "
                                             "JSON / intrinsics.csv beside the images, else a 60 degree FOV guess)"),
    ply_scale: Optional[float] = typer.Option(None, help="ply from a relative/disparity model: metres per unit"),
    smooth: Optional[float] = typer.Option(None, help="videos: temporal smoothing, the new frame's weight in (0,1] "
                                           "of a moving average after scale/shift alignment (relative models)"),
    tiled: bool = typer.Option(True, help="georeferenced GeoTIFFs: sliding windows, any size, <stem>_depth.tif "
                               "COG only (docs/aerial.md); --no-tiled reads them whole, as images"),
    tile_size: Optional[int] = typer.Option(None, help="tiled: tile side (default: the model's training size, else 512)"),
    overlap: float = typer.Option(0.25, help="tiled: overlap of neighbouring tiles, fraction of the tile"),
    resample: bool = typer.Option(True, help="tiled: resample rasters to the model's ground sampling distance"),
    overwrite: bool = typer.Option(False, help="tiled: redo rasters whose output exists (default: skip them, resume)"),
    ray: Optional[str] = typer.Option(None, help="tiled: run on Ray: local (a new local cluster), auto, ray://HOST:PORT"),
    workers: int = typer.Option(2, help="tiled with --ray: workers, one model each"),
    io_workers: Optional[int] = typer.Option(None, help="threads decoding images and threads writing files "
                                             "(default: CPU cores, at most 4)"),
    max_pixels: Optional[int] = typer.Option(None, help="refuse images whose header declares more pixels, before "
                                             "decoding them (default: depthlab.io.MAX_PIXELS, 50 million)"),
    backend: Optional[str] = typer.Option(None, help=BACKEND_HELP),
):
    """Predict depth for images; writes .npy (float32), 16-bit PNG, colourised PNG, side-by-side, GeoTIFF, PLY.

    Video files (.mp4, .mov, ...) give a colourised (color) / side-by-side (side) mp4, per-frame 16-bit PNGs
    (png16) and one .npz (npy); see docs/outputs.md. Georeferenced GeoTIFFs give Cloud-Optimised GeoTIFFs,
    predicted tile by tile at any size (docs/aerial.md)."""
    from depthlab.predictor import predict_files
    from depthlab.video import predict_videos, split_video_inputs

    videos, inputs = split_video_inputs(inputs)
    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    reports = []
    if tiled and inputs:  # georeferenced GeoTIFFs: depthlab.geo_predict; the other inputs come back
        from depthlab.geo_predict import RasterOptions, predict_raster_inputs

        inputs, rasters = predict_raster_inputs(
            inputs, out, model=model, checkpoint_path=checkpoint_path, pretrained=pretrained, device=device,
            batch_size=batch_size, options=RasterOptions(tile_size, overlap, resample), overwrite=overwrite,
            ray_address=ray, workers=workers, progress=True, backend=backend)
        if rasters.any:
            reports.append(rasters)
        if rasters.skipped:
            console.print(f"{len(rasters.skipped)} raster(s) skipped: output exists (--overwrite redoes them)")
    if videos:
        reports.append(predict_videos(videos, model=model, checkpoint_path=checkpoint_path, pretrained=pretrained,
                                      out_dir=out, formats=fmts, colormap=colormap, batch_size=batch_size,
                                      device=device, progress=True, input_size=_parse_size(input_size), smooth=smooth,
                                      backend=backend))
    if inputs or not reports:
        reports.append(predict_files(inputs, model=model, checkpoint_path=checkpoint_path, pretrained=pretrained,
                                     out_dir=out, formats=fmts, colormap=colormap, batch_size=batch_size,
                                     device=device, progress=True, input_size=_parse_size(input_size),
                                     intrinsics=intrinsics, ply_scale=ply_scale, io_workers=io_workers,
                                     max_pixels=max_pixels, backend=backend))
    failures = {p: reason for r in reports for p, reason in r.failures.items()}
    for path, reason in failures.items():
        err_console.print(f"failed {path}: {reason}", style="red", highlight=False, soft_wrap=True, markup=False)
    console.print(f"{sum(r.n_ok for r in reports)} written to {out}, {len(failures)} failed")
    if failures:  # partial failure is non-zero (1; 2 = usage or input error before any work)
        raise typer.Exit(1)


@command("demo")
def demo_cmd(out: Path = typer.Option(Path("outputs/demo"), help="output folder")):
    """The main job on the embedded default (bundled samples and weights)."""
    from depthlab.demo import run_demo

    run_demo(out, console=console)  # prints the summary table and the report's path itself


@command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/ and docs/training.md)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides, e.g. optim.lr=1e-4 train.devices=4"),
    resume: bool = typer.Option(False, "--resume", help="continue <output_dir>/<name>/checkpoints/last.ckpt exactly"),
):
    """Train a model from a config (Lightning: checkpoints, logs, precision, DDP); writes the run directory."""
    from depthlab.training.train import global_rank, train

    result = train(config, overrides or [], resume=resume)
    if global_rank() == 0:
        console.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True, markup=False)
        console.print(f"best: {result.best_checkpoint}  last: {result.last_checkpoint}", highlight=False, soft_wrap=True,
                      markup=False)
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}
        console.print(f"best validation metrics: {json.dumps(shown)}", highlight=False, soft_wrap=True, markup=False)


@command("export")
def export_cmd(
    model: Optional[str] = typer.Option(None, help="registered model name (see `depthlab models`)"),
    checkpoint_path: Optional[Path] = typer.Option(None, help="local weights file for --model"),
    checkpoint: Optional[Path] = typer.Option(None, help="a depthlab checkpoint (rebuilds its own model)"),
    out: Path = typer.Option(..., help="the .onnx file to write (plus <out>.json with normalisation and checks)"),
    height: Optional[int] = typer.Option(None, help="input height (default: the weights' input_size, else a "
                                         "training run's data.size)"),
    width: Optional[int] = typer.Option(None, help="input width (default: the weights' input_size, else a "
                                        "training run's data.size)"),
    dynamic: bool = typer.Option(False, "--dynamic", help="dynamic batch, height and width"),
    opset: int = typer.Option(17, help="ONNX opset"),
    precision: str = typer.Option("fp32", help="fp32, fp16, int8-dynamic or int8-static (ONNX Runtime quantisation)"),
    calibration: Optional[Path] = typer.Option(None, help="int8-static / fp16 / int8 check: folder of calibration "
                                                            "images (default: the bundled NYU frames)"),
):
    """Export a model to ONNX, verified against PyTorch with ONNX Runtime (max abs diff printed)."""
    from depthlab.export.model import export_model

    r = export_model(out, model=model, checkpoint_path=checkpoint_path, checkpoint=checkpoint, height=height,
                     width=width, dynamic=dynamic, opset=opset, precision=precision, calibration=calibration)
    console.print(f"wrote {r['path']} ({r['model_name']}, input {'x'.join(map(str, r['input_shape']))}"
                  f"{', dynamic' if r['dynamic'] else ''}, opset {r['opset']}, {r['exporter']} exporter, "
                  f"{r['precision']})",
                  highlight=False, soft_wrap=True, markup=False)
    console.print(f"onnxruntime vs PyTorch: max abs diff {r['max_abs_diff']:.3e} (relative {r['rel_diff']:.3e}, "
                  f"mean relative {r['mean_rel_diff']:.3e}, tolerance {r['tolerance']:.0e} on the {r['check']}) on "
                  f"{len(r['verified_shapes'])} input shape(s)"
                  + (f", {len(r['calibration_frames'])} calibration frames" if r['calibration_frames'] else ""),
                  highlight=False, soft_wrap=True, markup=False)


@command("serve")
def serve_cmd(
    model: str = typer.Option("fastdepth", help="registered model name or a depthlab checkpoint path"),
    checkpoint_path: Optional[Path] = typer.Option(None, help="local weights file for --model"),
    host: str = typer.Option("127.0.0.1", help="interface to bind (0.0.0.0 = every interface)"),
    port: int = typer.Option(8000),
    device: str = typer.Option("cpu"),
    input_size: Optional[str] = typer.Option(None, help=INPUT_SIZE_HELP),
    max_upload_mb: float = typer.Option(25.0, help="largest accepted upload in MB (larger: HTTP 413)"),
    max_pixels: Optional[int] = typer.Option(None, help="answer 413 to uploads declaring more pixels (default: "
                                             "depthlab.web.app.WEB_MAX_PIXELS, 16 million)"),
    backend: Optional[str] = typer.Option(None, help=BACKEND_HELP),
):
    """Serve the web app (upload an image, see and download its depth) with uvicorn."""
    from depthlab.web.app import WEB_MAX_PIXELS, serve

    serve(model=model, checkpoint_path=checkpoint_path, host=host, port=port, device=device,
          input_size=_parse_size(input_size), max_upload_mb=max_upload_mb, max_pixels=max_pixels or WEB_MAX_PIXELS,
          backend=backend)


@command("experiment")
def experiment_cmd(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/studies/ and docs/experiments.md)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="dotted training overrides for every run, e.g. train.max_epochs=5"),
    smoke: bool = typer.Option(False, "--smoke", help="apply the experiment's smoke block (tiny data, few steps)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default outputs/experiments/<name>, "
                                       "<name>_smoke with --smoke)"),
):
    """Run a grid of training runs, evaluate and time each, and write results.json, results.md and report.html."""
    from depthlab.experiment import run_experiment

    result = run_experiment(config, out_dir=out, smoke=smoke, overrides=overrides or [], console=err_console)
    failed = [r for r in result["runs"] if r["status"] != "ok"]
    for r in failed:
        err_console.print(f"[red]failed[/red] {r['id']}: {r['error']}", highlight=False, soft_wrap=True)
    if result.get("message"):
        err_console.print(f"[yellow]{result['message']}[/yellow]", highlight=False, soft_wrap=True)
    console.print(f"{len(result['runs']) - len(failed)} run(s) ok, {len(failed)} failed; report: "
                  f"{result['report_path']}", highlight=False, soft_wrap=True, markup=False)
    if failed or result.get("status") == "failed":
        raise typer.Exit(1)


@command("benchmark")
def benchmark_cmd(
    models: str = typer.Option(..., help="comma list of models: name (pretrained weights) or name:checkpoint_path"),
    datasets: str = typer.Option(..., help="comma list of registered datasets (folder, nyu, kitti, synthetic ...)"),
    root: Optional[List[str]] = typer.Option(None, "--root", help="DATASET=PATH (repeatable), e.g. folder=src/depthlab/assets/samples/nyu"),
    limit: Optional[int] = typer.Option(None, help="first N samples of each dataset"),
    split: str = typer.Option("test", help="dataset split"),
    device: str = typer.Option("cpu"),
    out: Path = typer.Option(Path("outputs/benchmark"), "--out", help="output folder"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Zero-shot benchmark: every model on every dataset under its paper protocol (results.csv/json/md + figures).

    Exit status: 0 when every model was scored on every dataset, 1 when a model was skipped or a
    (model, dataset) pair failed or scored no image, 2 on a usage or input error."""
    from depthlab.evaluation.benchmark import run_benchmark

    roots = {}
    for item in root or []:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            _fail(f"--root {item!r}: expected DATASET=PATH")
        roots[name.strip()] = path.strip()
    result = run_benchmark([m for m in models.split(",") if m.strip()],
                           [d.strip() for d in datasets.split(",") if d.strip()], out, roots=roots,
                           limit=limit, device=device, split=split, progress=True)
    for label, reason in result["skipped_models"].items():
        err_console.print(f"skipped {label}: {reason}", style="yellow", highlight=False, soft_wrap=True, markup=False)
    for r in result["rows"]:
        if r.get("status") != "ok":
            err_console.print(f"{r['model']} on {r['dataset']}: {r.get('status')} {r.get('error') or ''}",
                              highlight=False, soft_wrap=True, markup=False)
    if as_json:
        _print_json(result)
    else:
        from depthlab.report.terminal import print_markdown

        print_markdown(console, (Path(out) / "results.md").read_text())
    err_console.print(f"wrote {out}/results.json, results.csv, results.md", highlight=False, markup=False)
    n_asked = len(result["settings"]["models"]) * len(result["settings"]["datasets"])
    n_ok = sum(r.get("status") == "ok" for r in result["rows"])
    if n_ok < n_asked:
        _fail(f"{n_asked - n_ok} of {n_asked} model x dataset pairs not scored (see above)", code=1)


aerial_app = typer.Typer(no_args_is_help=True, help="Aerial orthophotos with LiDAR heights (see docs/aerial.md).")
app.add_typer(aerial_app, name="aerial")


@command("prepare", on=aerial_app)
def aerial_prepare_cmd(
    out: Path = typer.Option(..., "--out", help="dataset folder to create (rgb/, height/, splits/, categories.csv)"),
    ortho: List[str] = typer.Option(..., "--ortho", help="orthophoto GeoTIFFs: files, folders or globs (repeatable)"),
    dsm: Optional[List[str]] = typer.Option(None, "--dsm", help="surface model: GeoTIFF or XYZ grid (repeatable)"),
    dtm: Optional[List[str]] = typer.Option(None, "--dtm", help="terrain model: GeoTIFF or XYZ grid (repeatable)"),
    laz: Optional[List[str]] = typer.Option(None, "--laz", help="classified LAS/LAZ point clouds (repeatable)"),
    height_crs: Optional[str] = typer.Option(None, help="CRS of inputs that carry none (XYZ grids), e.g. EPSG:25832"),
    chip_size: int = typer.Option(512, help="chip side in orthophoto pixels"),
    lidar_resolution: float = typer.Option(1.0, help="cell size (m) of DSM/DTM gridded from point clouds"),
    resampling: str = typer.Option("bilinear", help="resampling of heights onto the orthophoto grid"),
    categories: Optional[Path] = typer.Option(None, help="polygons (GeoPackage/GeoJSON/...) or per-tile CSV name,category"),
    category_field: str = typer.Option("category", help="the polygons' class field"),
    block_size: float = typer.Option(500.0, help="side (map units, m) of the spatial split blocks"),
    fractions: str = typer.Option("0.7,0.15,0.15", help="train,val,test shares of chips"),
    buffer: float = typer.Option(0.0, help="drop chips within this distance (m) of another split's chip; <0: keep all"),
    seed: int = typer.Option(0, help="seed of the block shuffle"),
    min_valid: float = typer.Option(0.0, help="drop chips whose share of valid heights is not above this"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a non-empty --out"),
):
    """Build an aerial training set from portal downloads: nDSM chips aligned to orthophoto chips, split by blocks."""
    from depthlab.data.aerial_prepare import prepare_aerial

    try:
        shares = [float(v) for v in fractions.split(",")]
    except ValueError:
        _fail(f"--fractions must be three numbers train,val,test, got {fractions!r}")
    r = prepare_aerial(out, ortho, dsm or [], dtm or [], laz or [], chip_size=chip_size, height_crs=height_crs,
                       lidar_resolution=lidar_resolution, resampling=resampling, categories=categories,
                       category_field=category_field, block_size=block_size, fractions=shares,
                       buffer=None if buffer < 0 else buffer, seed=seed, min_valid=min_valid, overwrite=overwrite,
                       progress=lambda line: err_console.print(line, highlight=False, markup=False))
    console.print(f"wrote {r.root}: " + ", ".join(f"{k} {v}" for k, v in r.counts.items())
                  + f" chips; {len(r.dropped)} dropped (see {r.manifest})", highlight=False, soft_wrap=True, markup=False)


@command("mosaic", on=aerial_app)
def aerial_mosaic_cmd(
    inputs: List[str] = typer.Argument(..., help="prediction COGs: files, folders or globs"),
    out: Path = typer.Option(..., "--out", help="the .vrt to write (a GDAL virtual mosaic of the inputs)"),
):
    """One virtual raster (GDAL VRT) over the height COGs of an area, e.g. a state; QGIS/GDAL read it lazily."""
    from depthlab.geo_predict import write_mosaic_vrt

    n = write_mosaic_vrt(inputs, out)
    console.print(f"wrote {out}: {n} rasters", highlight=False, soft_wrap=True, markup=False)


_python_formatwarning = None  # warnings.formatwarning before main() replaced it


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """depthlab's own warnings read like the CLI's errors (one line, no source excerpt); others keep
    Python's format, where the location helps."""
    if filename and "depthlab" in str(filename).replace("\\", "/").split("/site-packages/")[-1]:
        return f"warning: {first_line(message) if isinstance(message, Warning) else message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


def _exit_on_sigterm() -> None:
    """SIGTERM (``kill``, a scheduler's stop) ends the command like Ctrl-C does: as an exception, so every
    ``finally`` runs and the temp file of a write in progress is deleted (Python's default would stop the process
    where it stands and leave it behind)."""
    import signal
    import threading

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main():  # console-script entry point
    import warnings

    _exit_on_sigterm()
    global _python_formatwarning
    if warnings.formatwarning is not _one_line_warning:  # main() may run twice in one process
        _python_formatwarning = warnings.formatwarning
        warnings.formatwarning = _one_line_warning
    app()


if __name__ == "__main__":
    main()
