"""The aerial study (configs/studies/aerial.yaml, docs/studies/aerial.md): its runs, data order, weights,
common test loss and figures. The end-to-end smoke is tests/test_experiment.py::test_study_smoke[aerial.yaml]."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("rasterio")
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # affine `*` inside rasterio

from depthlab.config import load_config  # noqa: E402
from depthlab.experiment import common_loss_fn, run_configs, weights_note  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STUDY = CONFIGS / "studies" / "aerial.yaml"
# what decides which tiles a run sees and in which order
ORDER_KEYS = ("dataset", "root", "kwargs", "train_split", "val_split", "test_split", "limit_train",
              "train_transforms")


@pytest.fixture(scope="module")
def aerial_tree(tmp_path_factory):
    from depthlab.data.fixtures import write_fixture

    return write_fixture("aerial", tmp_path_factory.mktemp("aerial"), n=14, size=(64, 64), splits=(6, 2, 6))


def _train_order(cfg, epochs=(0, 1)) -> list[list[str]]:
    """The tile names in the order the run's training loader visits them, per epoch."""
    from depthlab.training.datamodule import DepthDataModule

    dm = DepthDataModule(cfg.data, seed=cfg.train.seed)
    dm.setup("fit")
    loader = dm.train_dataloader()
    ds, idx = dm.train_set, None
    if isinstance(ds, torch.utils.data.Subset):
        ds, idx = ds.dataset, list(ds.indices)
    names = [ds.names[i] for i in (idx if idx is not None else range(len(ds)))]
    return [[names[i] for i in loader.sampler.indices(e)] for e in epochs]


@pytest.mark.parametrize("smoke", [False, True])
def test_three_runs_train_on_the_same_tiles_in_the_same_order(aerial_tree, smoke):
    cfgs = run_configs(STUDY, smoke=smoke, overrides=[f"data.root={aerial_tree}"])
    assert len(cfgs) == 3
    first = next(iter(cfgs.values()))
    for run_id, cfg in cfgs.items():
        for key in ORDER_KEYS:
            assert getattr(cfg.data, key) == getattr(first.data, key), (run_id, key)
        assert (cfg.train.seed, cfg.train.max_epochs) == (first.train.seed, first.train.max_epochs), run_id
    orders = {run_id: _train_order(cfg) for run_id, cfg in cfgs.items()}
    reference = orders[next(iter(orders))]
    assert reference[0] != reference[1] or len(reference[0]) < 2  # shuffled per epoch, reproducibly
    assert all(o == reference for o in orders.values()), orders


def test_real_runs_keep_the_aerial_reader_options():
    """The DAv2 / ZoeDepth runs no longer inherit `data.kwargs {n: 256}` from their base config."""
    cfgs = run_configs(STUDY)
    assert set(cfgs) == {"smp_unet_resnet34", "dav2_finetune", "zoedepth_finetune"}
    for cfg in cfgs.values():
        assert cfg.data.dataset == "aerial"
        assert cfg.data.kwargs == {"tile_size": 256, "ground_height": 0.01}
        assert cfg.data.max_depth == 100.0 and cfg.train.max_epochs == 10 and cfg.train.monitor == "val/mae"
    assert [cfgs[r].loss.terms for r in cfgs] == [{"huber": 1.0}, {"silog": 1.0}, {"silog": 1.0}]
    assert cfgs["zoedepth_finetune"].model.name == "zoedepth_nyu_kitti"


def test_a_wrong_reader_option_is_one_line_naming_key_and_dataset(aerial_tree):
    from depthlab.data import DatasetOptionError, create_dataset
    from depthlab.errors import DepthlabError

    with pytest.raises(DatasetOptionError) as err:
        create_dataset("aerial", root=aerial_tree, split="train", n=256)
    assert isinstance(err.value, DepthlabError)
    assert str(err.value) == ("data.kwargs: dataset 'aerial' has no option 'n' "
                              "(its options: tile_size, categories, rgb_max, ground_height)")
    with pytest.raises(DatasetOptionError, match=r"'tile_sise'; did you mean: tile_size\?"):
        create_dataset("aerial", root=aerial_tree, tile_sise=64)


def test_categories_are_the_studys_six_in_its_order(aerial_tree):
    from depthlab.data import create_dataset
    from depthlab.data.aerial import CATEGORIES

    assert CATEGORIES == ("residential", "suburbs", "campus", "industrial", "garden_centre", "fields")
    test = create_dataset("aerial", root=aerial_tree, split="test", tile_size=64)
    assert {test.item_category(i) for i in range(len(test))} == set(CATEGORIES)
    assert [test.item_category(i) for i in range(len(test))] == [test[i]["meta"]["category"] for i in range(len(test))]


def test_figure_rows_go_by_category_in_the_studys_order(aerial_tree):
    from depthlab.data import create_dataset
    from depthlab.data.aerial import CATEGORIES
    from depthlab.experiment import _EvalSet  # the experiment's own figure-sample picker

    test = create_dataset("aerial", root=aerial_tree, split="test", tile_size=32)  # 4 tiles per raster
    es = _EvalSet(test, len(test), "aerial", "test", by="category")
    rows = es.head(6)
    assert [s["meta"]["category"] for s in rows] == list(CATEGORIES)
    assert all(s["meta"]["name"].endswith("_r0_c0") for s in rows)  # the first tile of each category


def test_baseline_starts_from_imagenet_and_offline_names_both_ways(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    from depthlab.errors import WeightsUnavailableError
    from depthlab.models import create_model

    cfg = load_config(CONFIGS / "aerial_smp_unet.yaml")
    assert cfg.model.kwargs == {"encoder_pretrained": True}
    assert weights_note(cfg) == "ImageNet encoder (model.kwargs.encoder_pretrained=true); no pretrained model weights"
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # offline, with an empty cache
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as err:
        create_model("smp_unet_resnet34", **cfg.model.kwargs)
    msg = str(err.value)
    assert "\n" not in msg and "smp-hub/resnet34.imagenet" in msg and "encoder_checkpoint=" in msg


def test_smoke_goes_without_imagenet_and_says_so():
    cfgs = run_configs(STUDY, smoke=True)
    assert cfgs["smp_unet_resnet34"].model.kwargs["encoder_pretrained"] is False
    assert weights_note(cfgs["smp_unet_resnet34"]).startswith("encoder from random weights "
                                                              "(model.kwargs.encoder_pretrained=false)")
    assert weights_note(cfgs["dav2_finetune_tiny"]) == "no pretrained model weights (random initialisation)"
    assert weights_note(run_configs(STUDY)["dav2_finetune"]) == "pretrained weights (model.pretrained=true)"
    from depthlab.experiment import load_spec

    assert "no ImageNet encoder for the baseline" in load_spec(STUDY, smoke=True)[0].description
    assert not load_spec(STUDY)[0].description  # the real form claims nothing of the kind


def test_common_loss_is_the_baselines_huber_on_metres():
    fn, label = common_loss_fn({"huber": {"delta": 1.0}})
    assert label == "huber(delta=1.0) [m]"
    pred = torch.tensor([[[[1.0, 2.0], [5.0, 0.0]]]])
    gt = torch.tensor([[[[1.5, 2.0], [2.0, 9.0]]]])
    mask = torch.tensor([[[[True, True], [True, False]]]])
    # residuals 0.5, 0, 3 (the fourth pixel is masked): 0.5*0.25, 0, 1*(3-0.5) -> mean 2.625/3
    assert float(fn(pred, gt, mask)) == pytest.approx((0.125 + 0.0 + 2.5) / 3)
    from depthlab.experiment import ExperimentError

    with pytest.raises(ExperimentError, match="evaluation.common_loss: expected one loss"):
        common_loss_fn({"huber": {}, "l1": {}})


def test_losses_table_and_per_batch_figure_show_own_and_common_loss(tmp_path):
    """The report's *Training and test losses* table: means computed by hand from the per-batch values."""
    from html_cells import TableReader

    from depthlab.report.figures import experiment_figures
    from depthlab.report.html import loss_rows, render_html, render_markdown

    def run(rid, terms, own, common, epochs, weights):
        return {"id": rid, "status": "ok", "config": {"loss": {"terms": terms, "params": {"huber": {"delta": 1.0}}}},
                "test_loss": own, "common_test_loss": {"label": "huber(delta=1.0) [m]", "batches": common},
                "curves": {"train": [[0, 9.0]], "train_epoch": epochs}, "weights": weights, "run_dir": rid}

    results = {"name": "aerial", "runs": [
        run("base", {"huber": 1.0}, [2.0, 1.0], [2.0, 1.0], [[1, 3.5], [2, 1.25]], "ImageNet encoder"),
        run("dav2", {"silog": 1.0}, [8.0, 6.0, 7.0], [1.5, 2.5, 2.0], [[1, 2.0]], "pretrained weights")],
        "report": {}, "evaluations": []}
    rows = {r["run"]: r for r in loss_rows(results)}
    assert rows["base"]["objective"] == "huber(delta=1.0)" and rows["dav2"]["objective"] == "silog"
    assert (rows["base"]["train_loss_last"], rows["base"]["test_loss"], rows["base"]["common_test_loss"]) == \
        (1.25, 1.5, 1.5)
    assert (rows["dav2"]["train_loss_last"], rows["dav2"]["test_loss"], rows["dav2"]["common_test_loss"]) == \
        (2.0, 7.0, 2.0)
    figs = experiment_figures(results, tmp_path, {})
    assert (tmp_path / figs["test_loss"]).is_file()
    results["figures"] = figs
    reader = TableReader()
    reader.feed(render_html(results, tmp_path))
    cells = {(c["data-run"], c["data-col"]): c for c in reader.cells if c.get("table") == "losses"}
    assert float(cells[("dav2", "common_test_loss")]["data-value"]) == 2.0
    assert cells[("base", "weights")]["text"] == "ImageNet encoder"
    assert "| dav2 | silog | 2.0000 | 7.0000 | 2.0000 | pretrained weights |" in render_markdown(results)


def test_common_loss_equals_the_baselines_own_test_loss_at_gt_size(aerial_tree):
    """For a Huber run at the rasters' own size the common loss and its own objective coincide batch by batch;
    a run at another input size is scored on its prediction resized back to the LiDAR raster."""
    from depthlab.data import create_dataset
    from depthlab.experiment import _common_losses, _EvalSet, _test_losses
    from depthlab.training.task import DepthTask

    cfg = run_configs(STUDY, smoke=True, overrides=[f"data.root={aerial_tree}"])["smp_unet_resnet34"]
    assert list(cfg.data.size) == [64, 64]
    torch.manual_seed(0)
    task = DepthTask(cfg)
    ds = create_dataset("aerial", root=aerial_tree, split="test", **cfg.data.kwargs)
    es = _EvalSet(ds, 4, "aerial", "test")
    fn, _ = common_loss_fn({"huber": {"delta": 1.0}})
    own = _test_losses(task, es, 2, cfg.data.size)
    common = _common_losses(task, es, 2, cfg.data.size, fn)
    assert len(own) == len(common) == 2 and own == pytest.approx(common, rel=1e-6)
    smaller = _common_losses(task, es, 2, [32, 32], fn)  # predicted at 32x32, scored at 64x64
    assert len(smaller) == 2 and smaller != pytest.approx(common, rel=1e-3)
