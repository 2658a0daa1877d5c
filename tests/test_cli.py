"""The command line's own behaviour: --version, --json, exit statuses, terminal rendering, the fast zoo listing."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import depthlab
from depthlab.cli import app

NYU_SAMPLES = Path(depthlab.__file__).parent / "assets" / "samples" / "nyu"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _folder_with_predictions(tmp_path: Path) -> tuple[Path, Path]:
    """A 2-image folder dataset (16-bit mm depth) and .npy predictions = ground truth x 1.1."""
    root, preds = tmp_path / "ds", tmp_path / "preds"
    for d in (root / "rgb", root / "depth", preds):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        depth_m = rng.uniform(1.0, 5.0, (12, 16)).astype(np.float32)
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / "rgb" / f"{name}.png")
        Image.fromarray(np.round(depth_m * 1000).astype(np.uint16)).save(root / "depth" / f"{name}.png")
        np.save(preds / f"{name}.npy", np.round(depth_m * 1000) / 1000 * 1.1)
    (root / "index.csv").write_text("name,rgb,depth,depth_unit\n" + "".join(
        f"{n},rgb/{n}.png,depth/{n}.png,mm\n" for n in ("a", "b")))
    return root, preds


def test_version():
    from depthlab import __version__

    r = _invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"depthlab {__version__}"


def test_models_lists_quickly_without_building_a_network(monkeypatch):
    import depthlab.models.registry as registry

    def refuse(*a, **k):
        raise AssertionError("the listing built a network")

    monkeypatch.setattr(registry, "create_model", refuse)
    r = _invoke("models")  # fast because it builds no network: `refuse` above fails the test if one is built
    assert r.exit_code == 0, r.output
    assert "fastdepth" in r.stdout and "depth_anything_v2_vits" in r.stdout
    header = next(line for line in r.stdout.splitlines() if "licence" in line)
    assert "params" not in header and "GMACs" not in header
    assert "depthlab models --cost" in r.stdout  # says how to get the costs
    rows = json.loads(_invoke("models", "fast*", "--json").stdout)
    assert [row["name"] for row in rows] == ["fastdepth"] and rows[0]["params"] is None


def test_models_cost_shows_progress_and_counts(monkeypatch):
    r = _invoke("models", "fastdepth", "--cost")
    assert r.exit_code == 0, r.output
    assert "costing 1/1: fastdepth" in r.stderr  # not a terminal: one line per model
    assert "1.35 M" in r.stdout and "(1 model)" in r.stdout


def test_eval_json_parses_and_matches_the_table(tmp_path):
    root, preds = _folder_with_predictions(tmp_path)
    r = _invoke("eval", "--dataset", "folder", "--root", str(root), "--predictions", str(preds), "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["summary"]["n_images"] == 2
    assert res["summary"]["abs_rel"] == pytest.approx(0.1, abs=1e-3)  # pred = 1.1 x gt everywhere


def test_eval_on_a_terminal_renders_tables_without_markdown(tmp_path, monkeypatch):
    import depthlab.cli as cli

    root, preds = _folder_with_predictions(tmp_path)
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, force_terminal=True, width=200, color_system=None))
    r = _invoke("eval", "--dataset", "folder", "--root", str(root), "--predictions", str(preds))
    assert r.exit_code == 0, r.output
    text = buf.getvalue()
    assert "abs_rel" in text and "Protocol none" in text
    for markup in ("**", "|---", "---:", "`"):
        assert markup not in text, markup
    # piped (CliRunner's stdout is not a terminal): the Markdown itself, ready for a file
    monkeypatch.undo()
    assert "| none | 2 |" in _invoke("eval", "--dataset", "folder", "--root", str(root),
                                     "--predictions", str(preds)).stdout


def test_benchmark_exits_1_when_a_model_was_not_scored(tmp_path):
    r = _invoke("benchmark", "--models", f"fastdepth:{tmp_path / 'missing.safetensors'}", "--datasets", "folder",
                "--root", f"folder={NYU_SAMPLES}", "--limit", "1", "--out", str(tmp_path / "b"),
                "--json")
    assert r.exit_code == 1, r.output
    res = json.loads(r.stdout)
    assert list(res["skipped_models"]) == [f"fastdepth:{tmp_path / 'missing.safetensors'}"]
    assert "1 of 1 model x dataset pairs not scored" in r.stderr


def test_datasets_show_no_rst_markup():
    r = _invoke("datasets")
    assert r.exit_code == 0 and "folder" in r.stdout and "``" not in r.stdout


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`depthlab train` on 8 synthetic 32x48 scenes for 2 epochs, output not a terminal: (CliRunner result,
    Lightning's log messages, run directory)."""
    import logging

    out = tmp_path_factory.mktemp("runs")
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    lightning_log = logging.getLogger("lightning.pytorch")
    lightning_log.addHandler(handler)
    mp = pytest.MonkeyPatch()
    mp.delenv("DEPTHLAB_NO_PROGRESS", raising=False)
    try:
        r = _invoke("train", str(Path(__file__).parents[1] / "configs" / "synthetic_quick.yaml"),
                    f"output_dir={out}", "name=p", "train.max_epochs=2", "data.kwargs.n=8", "data.batch_size=4",
                    "data.size=[32,48]", "data.limit_val=4", "train.log_every_n_steps=1", "train.loggers=[]")
    finally:
        lightning_log.removeHandler(handler)
        mp.undo()
    return r, seen, out / "p"


def test_train_prints_progress_lines_when_not_on_a_terminal(tiny_run):
    r, seen, _ = tiny_run
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert any(line.startswith("training UNet: ") and "2 batches per epoch" in line for line in lines), r.stderr
    assert "epoch 1/2 step 1: loss " in r.stderr and "epoch 2/2 step 4: loss " in r.stderr
    assert sum(" validation: loss " in line and "rmse" in line for line in lines) == 2
    assert any("GPU available" in m for m in seen)  # Lightning's own lines still come through...
    assert not any("Tip:" in m for m in seen)  # ...but not its advertising...
    assert not any("weights_only" in m for m in seen)  # ...nor its note on its own checkpoint format


def test_export_a_run_checkpoint_at_its_training_size(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    _, _, run_dir = tiny_run
    out = tmp_path / "run.onnx"
    r = _invoke("export", "--checkpoint", str(run_dir / "best.safetensors"), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "input 1x3x32x48" in r.stdout
    assert json.loads(out.with_name("run.onnx.json").read_text())["input_shape"] == [1, 3, 32, 48]


def test_tables_are_not_cut_at_80_columns_when_redirected():
    from rich.table import Table

    from depthlab.report.terminal import print_table

    table = Table(title="summary")
    cells = [f"column_{i}_value" for i in range(14)]  # 14 x 15 characters: wider than 80 (and 160) columns
    for i in range(14):
        table.add_column(f"header_{i}")
    table.add_row(*cells)
    buf = io.StringIO()
    print_table(Console(file=buf, width=80), table)  # a file: not a terminal
    row = next(line for line in buf.getvalue().splitlines() if "column_0_value" in line)
    assert all(c in row for c in cells) and "…" not in buf.getvalue()


def test_train_threads_sets_torch_threads_for_the_run(tmp_path, monkeypatch):
    import torch
    from lightning.pytorch.callbacks import Callback

    from depthlab.config import ConfigError
    from depthlab.training import train

    seen = []

    class Threads(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(torch.get_num_threads())

    monkeypatch.setenv("DEPTHLAB_NO_PROGRESS", "1")
    torch.set_num_threads(2)  # the module's one_torch_thread fixture restores the outer value
    cfg = Path(__file__).parents[1] / "configs" / "synthetic_quick.yaml"
    small = [f"output_dir={tmp_path}", "data.kwargs.n=4", "data.batch_size=4", "data.size=[32,32]",
             "data.limit_val=4", "train.max_steps=1", "train.loggers=[]"]
    train(cfg, [*small, "train.threads=1"], callbacks=[Threads()])
    assert seen == [1] and torch.get_num_threads() == 2  # set for the run, restored after it
    with pytest.raises(ConfigError, match="train.threads: must be >= 1"):
        train(cfg, [*small, "name=zero", "train.threads=0"])


def test_predict_warns_when_auto_squeezes_a_frame_and_keep_aspect_keeps_it(tmp_path):
    """A 375x1242 KITTI frame: "auto" runs FastDepth at its trained 224x224 and says so; keep-aspect runs
    224x736 (short side 224, width 1242 x 224 / 375 = 742 rounded to a multiple of 32); predictions.json
    records the network input size. A 480x640 NYU frame (4:3, what the 224x224 weights were trained from)
    gives no warning."""
    import warnings

    kitti = str(NYU_SAMPLES.parent / "kitti" / "rgb" / "metric3d_0000000005.png")
    with pytest.warns(UserWarning, match=r"375x1242 image runs at 224x224.*keep-aspect.*\(224x736 here\)"):
        r = _invoke("predict", kitti, "--model", "fastdepth", "--out", str(tmp_path / "auto"), "--formats", "npy")
    assert r.exit_code == 0, r.output
    sidecar = json.loads((tmp_path / "auto" / "predictions.json").read_text())
    assert sidecar["input_size"] == "auto"
    assert sidecar["files"]["metric3d_0000000005"]["network_input_size"] == [224, 224]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a keep-aspect run nor a 4:3 frame warns
        r = _invoke("predict", kitti, "--model", "fastdepth", "--out", str(tmp_path / "keep"), "--formats", "npy",
                    "--input-size", "keep-aspect")
        assert r.exit_code == 0, r.output
        r = _invoke("predict", str(NYU_SAMPLES / "rgb" / "metric3d_00000.png"), "--model", "fastdepth", "--out",
                    str(tmp_path / "nyu"), "--formats", "npy")
        assert r.exit_code == 0, r.output
    entry = json.loads((tmp_path / "keep" / "predictions.json").read_text())["files"]["metric3d_0000000005"]
    assert entry["network_input_size"] == [224, 736] and (entry["height"], entry["width"]) == (375, 1242)
