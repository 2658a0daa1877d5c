"""Registry and weight loading: names, patterns, offline errors, strict loading, checkpoints."""
from __future__ import annotations

import json
import struct

import pytest
import torch
import torch.nn as nn

from depthlab import create_model, list_models, load_checkpoint, save_checkpoint
from depthlab.errors import WeightsUnavailableError
from depthlab.models import registry
from depthlab.models.registry import WeightsInfo, get_entry, register_model


class _Tiny(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        return {"depth": torch.relu(self.head(torch.relu(self.conv(x))))}


@pytest.fixture
def throwaway_model():
    """Register ``_test_hub_only`` (weights only on a fake hub repo) and remove it afterwards."""
    name = "_test_hub_only"
    info = WeightsInfo(output_kind="relative", hub_id="depthlab-tests/no-such-repo",
                       hub_filename="model.safetensors", license="none")
    register_model(info, name=name)(lambda width=4: _Tiny(width))
    yield name
    registry._REGISTRY.pop(name, None)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match=r"unknown model 'fastdeph'.*did you mean: fastdepth"):
        create_model("fastdeph")
    with pytest.raises(KeyError, match="see `depthlab models`") as err:
        get_entry("zzzzzzzzzzzz")
    assert str(err.value).startswith("unknown model 'zzzzzzzzzzzz'")  # no KeyError quotes around the message


def test_list_models_pattern():
    names = list_models()
    assert "fastdepth" in names and names == sorted(names)
    assert list_models("fast*") == ["fastdepth"]
    assert list_models("no-such-*") == []
    assert list_models("*depth*") == [n for n in names if "depth" in n] and "zoedepth_nyu" in list_models("*depth*")


def test_create_model_attaches_metadata():
    m = create_model("fastdepth")
    assert m.model_name == "fastdepth" and m.model_args == {}
    assert m.depth_info == get_entry("fastdepth").info
    m2 = create_model("fastdepth", depth_info={"max_depth": 5.0})
    assert m2.depth_info.max_depth == 5.0 and get_entry("fastdepth").info.max_depth == 10.0


def test_offline_without_weights_names_hub_and_checkpoint_path(throwaway_model, monkeypatch):
    import huggingface_hub.constants as hf_constants

    # huggingface_hub reads HF_HUB_OFFLINE at import time: set the variable and the parsed constant
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError) as err:
        create_model(throwaway_model, pretrained=True)
    msg = str(err.value)
    assert "depthlab-tests/no-such-repo" in msg
    assert "checkpoint_path=" in msg and "--checkpoint-path" in msg
    assert "\n" not in msg


def test_checkpoint_path_alternative_and_missing_file(throwaway_model, tmp_path):
    from safetensors.torch import save_file

    src = create_model(throwaway_model)
    f = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(f))
    loaded = create_model(throwaway_model, checkpoint_path=f)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in src.state_dict().items())
    # a .pth state dict works as well (read with weights_only=True)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "w.pth")
    loaded = create_model(throwaway_model, checkpoint_path=tmp_path / "w.pth")
    assert torch.equal(loaded.conv.weight, src.conv.weight)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        create_model(throwaway_model, checkpoint_path=tmp_path / "missing.safetensors")


def test_mismatching_state_dict_fails_strictly(throwaway_model, tmp_path):
    from safetensors.torch import save_file

    state = create_model(throwaway_model).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["head.bias"]
    f = tmp_path / "bad.safetensors"
    save_file(state, str(f))
    with pytest.raises(RuntimeError) as err:
        create_model(throwaway_model, checkpoint_path=f)
    msg = str(err.value)
    assert "1 missing" in msg and "head.bias" in msg
    assert "1 unexpected" in msg and "extra.weight" in msg
    assert str(f) in msg
    # wrong shapes are refused too
    state = create_model(throwaway_model, width=8).state_dict()
    save_file(state, str(f))
    with pytest.raises(RuntimeError, match="size mismatch"):
        create_model(throwaway_model, checkpoint_path=f)


def test_checkpoint_round_trip_rebuilds_from_header(tmp_path):
    torch.manual_seed(0)
    model = create_model("fastdepth", depth_info={"max_depth": 8.0})
    with torch.no_grad():  # not the bundled weights: the round trip must carry its own values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_checkpoint(model, tmp_path / "ckpt.safetensors", config={"lr": 1e-3}, metrics={"rmse": 0.5})

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])  # safetensors: 8-byte header length, then JSON, then raw tensors
    header = json.loads(raw[8: 8 + n])
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither pickle nor torch zip
    meta = json.loads(header["__metadata__"]["depthlab"])
    assert meta["model_name"] == "fastdepth" and meta["metrics"] == {"rmse": 0.5}
    assert meta["depth_info"]["max_depth"] == 8.0

    rebuilt = load_checkpoint(path)
    assert rebuilt.model_name == "fastdepth" and rebuilt.depth_info == model.depth_info
    x = torch.rand(1, 3, 64, 96)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x)["depth"], rebuilt(x)["depth"])


def test_checkpoint_keeps_model_args(throwaway_model, tmp_path):
    model = create_model(throwaway_model, width=6)
    path = save_checkpoint(model, tmp_path / "t.safetensors")
    rebuilt = load_checkpoint(path)
    assert rebuilt.conv.out_channels == 6 and rebuilt.model_args == {"width": 6}
    assert rebuilt.depth_info.output_kind == "relative"


def test_zoo_rows_and_tables():
    from rich.console import Console

    from depthlab.models.zoo import print_zoo_table, zoo_markdown, zoo_rows

    (row,) = zoo_rows("fastdepth")
    assert row["params"] == 1_352_225
    assert row["gmacs"] == pytest.approx(2.243, abs=0.01)  # paper: ~0.37 GMACs at 224x224, x6.1 pixels
    assert row["cost_size"] == [480, 640] and row["output_kind"] == "metric"
    assert row["input_size"] == [224, 224] and row["multiple_of"] == 32
    assert row["weights_local"] is True and row["license"].startswith("MIT")
    md = zoo_markdown([row])
    assert md.splitlines()[2].startswith("| fastdepth | 1.35 M | 2.24 | metric | 224x224/32 | yes | MIT |")
    cheap = zoo_rows("*", with_cost=False)
    assert [r["name"] for r in cheap] == list_models() and all(r["params"] is None for r in cheap)
    console = Console(record=True, width=200)
    print_zoo_table("fast*", with_cost=False, console=console)
    text = console.export_text()
    assert "fastdepth" in text and "224x224/32" in text and "(1 model)" in text


def test_zoo_marks_missing_weights(throwaway_model):
    from depthlab.models.zoo import zoo_rows

    (row,) = zoo_rows(throwaway_model, with_cost=True)
    assert row["weights_local"] is False and row["has_pretrained"] is True
    assert row["params"] == 3 * 4 * 9 + 4 + 4 + 1 and row["error"] is None


def test_models_cli():
    from typer.testing import CliRunner

    from depthlab.cli import app

    r = CliRunner().invoke(app, ["models", "fast*", "--no-cost"])
    assert r.exit_code == 0 and "fastdepth" in r.output


def test_resolve_model_every_way_a_user_names_a_model(throwaway_model, tmp_path):
    from safetensors.torch import save_file

    from depthlab.models import resolve_model

    torch.manual_seed(0)
    src = create_model(throwaway_model)
    weights = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(weights))
    # a registered name with a weights file
    by_name = resolve_model(throwaway_model, checkpoint_path=weights)
    assert isinstance(by_name, _Tiny)
    assert torch.equal(by_name.conv.weight, src.conv.weight)
    # a module: the same object, with the weights loaded into it
    blank = create_model(throwaway_model)
    assert resolve_model(blank, checkpoint_path=weights) is blank
    assert torch.equal(blank.conv.weight, src.conv.weight)
    # a depthlab checkpoint, as the model argument or as checkpoint=
    ckpt = save_checkpoint(src, tmp_path / "run.safetensors")
    for rebuilt in (resolve_model(ckpt), resolve_model(checkpoint=ckpt)):
        assert rebuilt.model_name == throwaway_model and torch.equal(rebuilt.head.weight, src.head.weight)
    # errors, each one line naming what to do
    with pytest.raises(ValueError, match="not both"):
        resolve_model(checkpoint=ckpt, checkpoint_path=weights)
    with pytest.raises(ValueError, match="carries its own weights"):
        resolve_model(ckpt, checkpoint_path=weights)
    with pytest.raises(FileNotFoundError, match="missing.safetensors: checkpoint not found"):
        resolve_model(checkpoint=tmp_path / "missing.safetensors")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_model(blank, checkpoint_path=tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="no model: pass --model NAME"):
        resolve_model()
    with pytest.raises(TypeError, match="got int"):
        resolve_model(3)


def test_count_macs_includes_attention_at_the_adapters_processing_size():
    """Depth Anything's cost is counted at its own processing size (518 short side, multiple of 14) and
    includes attention's two matrix products, which the fused SDPA kernels hide from the flop counter:
    by hand, layers x 2 x tokens^2 x hidden MACs."""
    pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    from tiny_models import TINY_DAV2
    from depthlab.evaluation.speed import count_macs, network_size

    model = create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2).eval()
    h, w = network_size(model, (480, 640))
    assert (h, w) == (518, 686)  # 518 short side, 686 = 49 x 14
    with torch.no_grad(), FlopCounterMode(display=False) as fused:
        model(torch.zeros(1, 3, h, w))
    tokens = (h // 14) * (w // 14) + 1  # patches + CLS
    attention = 4 * 2 * tokens**2 * 32  # 4 layers, Q K^T and A V, hidden 32
    assert count_macs(model, (480, 640)) == fused.get_total_flops() / 2 + attention


def test_a_folder_as_weights_file_is_a_clear_error(tmp_path):
    from depthlab.models import resolve_model

    with pytest.raises(WeightsUnavailableError, match="checkpoint_path is a folder; give the weights file"):
        resolve_model("fastdepth", checkpoint_path=tmp_path)


def test_a_family_that_fails_to_import_is_not_hidden():
    """Families import eagerly (as timm's do): a broken one fails the import with its own error, where the
    old lazy loader dropped it from list_models() silently and never retried."""
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    code = "import sys\nsys.modules['depthlab.models.leve'] = None  # an import of it now fails\n" \
           "import depthlab\nprint(depthlab.list_models('leve*'))\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": src, "PATH": ""})
    assert r.returncode == 1 and "depthlab.models.leve" in r.stderr and r.stdout == "", (r.stdout, r.stderr)


def test_a_model_option_it_does_not_take_is_one_line_naming_it():
    from depthlab.config import ConfigError, load_config
    from depthlab.models.registry import ModelOptionError, create_model
    from depthlab.training import DepthTask

    options = r"\(its options: batch_norm, base_channels, upsample\)"
    with pytest.raises(ModelOptionError, match=rf"^model 'unet' has no option 'base_channel'; did you mean: "
                                               rf"base_channels\? {options}$"):
        create_model("unet", base_channel=4)
    with pytest.raises(ConfigError, match=r"^model.kwargs: model 'unet' has no option 'bse'"):
        DepthTask(load_config({}, ["model.name=unet", "model.kwargs.bse=3"]))
    with pytest.raises(ConfigError, match=r"^model.kwargs: unet cannot be built with \{'base_channels': -3\}"):
        DepthTask(load_config({}, ["model.name=unet", "model.kwargs.base_channels=-3"]))
