"""The ``depthlab`` command line: every command parses its arguments and calls ONE library function."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="depthlab: monocular depth estimation -- data, models, training, evaluation, reports.")
console = Console()
err_console = Console(stderr=True)


def _fail(msg: str, code: int = 2):
    err_console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command("eval")
def eval_cmd(
    dataset: str = typer.Option(..., help="registered dataset name (see `depthlab datasets`) or 'folder'"),
    root: Optional[Path] = typer.Option(None, help="dataset root folder (or file, e.g. the NYU .mat)"),
    split: str = typer.Option("test", help="dataset split"),
    model: Optional[str] = typer.Option(None, help="registered model name to run"),
    checkpoint_path: Optional[Path] = typer.Option(None, help="weights for --model (local file)"),
    checkpoint: Optional[Path] = typer.Option(None, help="a depthlab checkpoint (rebuilds its own model)"),
    predictions: Optional[Path] = typer.Option(None, help="folder of predictions (.npy metres or 16-bit .png), matched by stem"),
    pred_scale: Optional[float] = typer.Option(None, help="16-bit PNG predictions: metres per unit (e.g. 0.001 for mm)"),
    pred_kind: str = typer.Option("metric", help="what --predictions hold: metric | relative | disparity"),
    protocol: str = typer.Option("none", help="evaluation protocol preset (see `depthlab protocols`)"),
    out: Optional[Path] = typer.Option(None, help="write the results JSON here (atomically)"),
    device: str = typer.Option("cpu"),
    limit: Optional[int] = typer.Option(None, help="evaluate only the first N samples"),
):
    """Evaluate predictions or a model on a dataset under a named protocol."""
    from depthlab.errors import DepthlabError
    from depthlab.evaluation.evaluate import evaluate, format_markdown

    try:
        result = evaluate(dataset=dataset, root=root, split=split, model=model, checkpoint_path=checkpoint_path,
                          checkpoint=checkpoint, predictions=predictions, pred_scale=pred_scale, pred_kind=pred_kind,
                          protocol=protocol, out=out, device=device, limit=limit, progress=True)
    except (DepthlabError, FileNotFoundError, ValueError, KeyError) as e:
        _fail(str(e))
    console.print(format_markdown(result), highlight=False, soft_wrap=True, markup=False)
    for name, reason in result.get("skipped", {}).items():
        err_console.print(f"[yellow]skipped[/yellow] {name}: {reason}", highlight=False, soft_wrap=True)
    if out:
        console.print(f"wrote {out}")


@app.command("protocols")
def protocols_cmd():
    """List evaluation protocol presets with all their settings."""
    from depthlab.evaluation.protocols import list_protocols, get_protocol

    for name in list_protocols():
        console.print(f"[bold]{name}[/bold]: {get_protocol(name).describe()}", highlight=False, soft_wrap=True)


@app.command("datasets")
def datasets_cmd():
    """List registered datasets."""
    from depthlab.data import describe_datasets

    for name, doc in describe_datasets().items():
        console.print(f"[bold]{name}[/bold]: {doc}", highlight=False, soft_wrap=True)


@app.command("models")
def models_cmd(
    pattern: str = typer.Argument("*", help="shell-style filter on model names"),
    cost: bool = typer.Option(True, help="compute params and GMACs at 480x640 (slower)"),
):
    """The model zoo as a table: params, GMACs at 480x640, output kind, local weights, licence."""
    from depthlab.models.zoo import print_zoo_table

    print_zoo_table(pattern, with_cost=cost, console=console)


@app.command("predict")
def predict_cmd(
    inputs: List[str] = typer.Argument(..., help="image files, folders or globs"),
    model: str = typer.Option(..., help="registered model name"),
    checkpoint_path: Optional[Path] = typer.Option(None, help="local weights file for --model"),
    pretrained: bool = typer.Option(True, help="load the model's published/bundled weights"),
    out: Path = typer.Option(Path("outputs/predict"), help="output folder"),
    formats: str = typer.Option("npy,png16,color", help="comma list of: npy, png16, color, side"),
    colormap: str = typer.Option("Spectral_r", help="matplotlib colormap of the colourised PNGs"),
    batch_size: int = typer.Option(1),
    device: str = typer.Option("cpu"),
):
    """Predict depth for images; writes .npy (float32), 16-bit PNG, colourised PNG, side-by-side."""
    from depthlab.errors import DepthlabError
    from depthlab.predictor import predict_files

    try:
        report = predict_files(inputs, model=model, checkpoint_path=checkpoint_path, pretrained=pretrained,
                               out_dir=out, formats=[f.strip() for f in formats.split(",") if f.strip()],
                               colormap=colormap, batch_size=batch_size, device=device, progress=True)
    except (DepthlabError, FileNotFoundError, ValueError, KeyError) as e:
        _fail(str(e))
    for path, reason in report.failures.items():
        err_console.print(f"[red]failed[/red] {path}: {reason}", highlight=False, soft_wrap=True)
    console.print(f"{report.n_ok} written to {out}, {len(report.failures)} failed")
    if report.failures:  # exit status = number of failed inputs (capped): partial failure is non-zero
        raise typer.Exit(min(len(report.failures), 100))


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("outputs/demo"), help="output folder")):
    """The main job on the embedded default (bundled samples and weights)."""
    from depthlab.demo import run_demo

    result = run_demo(out)
    console.print(json.dumps(result.get("summary", {}), indent=2))


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/ and docs/training.md)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides, e.g. optim.lr=1e-4 train.devices=4"),
    resume: bool = typer.Option(False, "--resume", help="continue <output_dir>/<name>/checkpoints/last.ckpt exactly"),
):
    """Train a model from a config (Lightning: checkpoints, logs, precision, DDP); writes the run directory."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from depthlab.errors import DepthlabError
    from depthlab.training.train import train

    try:
        result = train(config, overrides or [], resume=resume)
    except (DepthlabError, FileNotFoundError, FileExistsError, ValueError, KeyError, MisconfigurationException) as e:
        _fail(str(e))
    from lightning.fabric.utilities.rank_zero import _get_rank

    if (_get_rank() or 0) == 0:
        console.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True, markup=False)
        console.print(f"best: {result.best_checkpoint}  last: {result.last_checkpoint}", highlight=False, soft_wrap=True,
                      markup=False)
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}
        console.print(f"best validation metrics: {json.dumps(shown)}", highlight=False, soft_wrap=True, markup=False)


def main():  # console-script entry point
    app()


if __name__ == "__main__":
    main()
