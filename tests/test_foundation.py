"""Foundation adapters (Depth Anything V2, ZoeDepth, DPT, Marigold) against transformers / diffusers.

Every model here is a tiny, randomly initialised configuration saved to a temporary folder in Hugging
Face format: nothing is downloaded. Parity is checked against the libraries' own processors, pipelines
and post-processing on the same weights and image: max|a - b| / max|b| < 1e-4.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import depthlab
from depthlab.models.registry import get_weights_info
from depthlab.predictor import Predictor

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

from depthlab.models.foundation import convert_dav2  # noqa: E402
from depthlab.models.foundation.hf_depth import HFDepthModel  # noqa: E402
from tiny_models import TINY_DAV2, TINY_DPT, TINY_ZOEDEPTH, offline_hub_load, rel_diff, rgb_uint8  # noqa: E402

RTOL = 1e-4
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])

DAV2 = [f"depth_anything_v2_{s}" for s in ("vits", "vitb", "vitl")]
DAV2_METRIC = [f"depth_anything_v2_metric_{d}_{s}" for d in ("hypersim", "vkitti") for s in ("vits", "vitb", "vitl")]
DAV1 = [f"depth_anything_v1_{s}" for s in ("vits", "vitb", "vitl")]
MIDAS31 = ["midas_dpt_beit_large_512", "midas_dpt_beit_large_384", "midas_dpt_beit_base_384",
           "midas_dpt_swinv2_large_384", "midas_dpt_swinv2_base_384", "midas_dpt_swinv2_tiny_256"]
ALL = DAV2 + DAV2_METRIC + DAV1 + MIDAS31 + ["zoedepth_nyu", "zoedepth_kitti", "zoedepth_nyu_kitti",
                                             "midas_dpt_large", "midas_dpt_hybrid", "marigold_depth"]


def chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def hf_folder(tmp_path, name: str, hf_model, processor) -> str:
    folder = tmp_path / name
    hf_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


# --------------------------------------------------------------------------------------------------
# Registry metadata (no transformers model built)


def test_every_variant_is_registered_with_its_kind_and_licence():
    names = depthlab.list_models()
    assert set(ALL) <= set(names)
    kinds = {n: get_weights_info(n).output_kind for n in ALL}
    assert {kinds[n] for n in DAV2 + DAV1 + MIDAS31 + ["midas_dpt_large", "midas_dpt_hybrid"]} == {"disparity"}
    assert {kinds[n] for n in DAV2_METRIC + ["zoedepth_nyu", "zoedepth_kitti", "zoedepth_nyu_kitti"]} == {"metric"}
    assert kinds["marigold_depth"] == "relative"
    info = get_weights_info("depth_anything_v2_vits")
    assert (info.input_size, info.multiple_of, info.hub_id) == ((518, 518), 14, "depth-anything/Depth-Anything-V2-Small-hf")
    assert info.license == "Apache-2.0"
    assert get_weights_info("depth_anything_v2_vitl").license == "CC-BY-NC-4.0"
    assert get_weights_info("depth_anything_v2_metric_hypersim_vits").max_depth == 20
    assert get_weights_info("depth_anything_v2_metric_vkitti_vitb").max_depth == 80
    assert get_weights_info("depth_anything_v2_metric_vkitti_vitb").hub_id.endswith("Metric-Outdoor-Base-hf")
    assert get_weights_info("zoedepth_nyu_kitti").hub_id == "Intel/zoedepth-nyu-kitti"
    assert get_weights_info("midas_dpt_hybrid").hub_id == "Intel/dpt-hybrid-midas"
    assert get_weights_info("marigold_depth").hub_id.startswith("prs-eth/marigold-depth")
    for n in ALL:
        i = get_weights_info(n)
        assert i.license and i.license != "unknown" and i.paper and i.hub_id and i.train_datasets, n


def test_depth_anything_v1_and_midas31_metadata():
    """V1 S/B/L: the Leve study's teacher names, hub ids and licences of the LiheYoung model cards, the V2
    processor (518, multiple of 14); MiDaS v3.1: Intel/dpt-* ids at their square training sizes."""
    from depthlab.models.foundation.hf_depth import dav1_config, dav2_config, midas31_config

    for size, hub, licence in [("vits", "small", "Apache-2.0"), ("vitb", "base", "CC-BY-NC-4.0"),
                               ("vitl", "large", "CC-BY-NC-4.0")]:
        i = get_weights_info(f"depth_anything_v1_{size}")
        assert (i.hub_id, i.license, i.output_kind) == (f"LiheYoung/depth-anything-{hub}-hf", licence, "disparity")
        assert (i.input_size, i.multiple_of, i.mean) == ((518, 518), 14, (0.485, 0.456, 0.406))
        # V1's DPT head reads the last four DINOv2 blocks (V2: evenly spaced ones); the rest is V2's
        v1, v2 = dav1_config(size), dav2_config(size)
        depth = v1["backbone_config"]["num_hidden_layers"]
        assert v1["backbone_config"]["out_indices"] == [depth - 3, depth - 2, depth - 1, depth]
        assert v1["backbone_config"]["out_indices"] != v2["backbone_config"]["out_indices"]
        assert {k: v for k, v in v1.items() if k != "backbone_config"} == {k: v for k, v in v2.items()
                                                                           if k != "backbone_config"}
    assert dav1_config("vitl")["backbone_config"]["out_indices"] == [21, 22, 23, 24]
    i = get_weights_info("midas_dpt_beit_large_512")
    assert (i.hub_id, i.input_size, i.mean) == ("Intel/dpt-beit-large-512", (512, 512), (0.5, 0.5, 0.5))
    assert get_weights_info("midas_dpt_swinv2_tiny_256").input_size == (256, 256)
    assert midas31_config("swinv2", "large", 384)["neck_hidden_sizes"] == [192, 384, 768, 1536]
    assert midas31_config("beit", "base", 384)["backbone_config"]["out_features"][-1] == "stage12"


def test_unknown_kwarg_is_rejected():
    with pytest.raises(TypeError, match="config_overrides"):
        depthlab.create_model("depth_anything_v2_vits", hidden_size=32)


# --------------------------------------------------------------------------------------------------
# Depth Anything V2


def dav2_processor():
    return transformers.DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                                          ensure_multiple_of=14, resample=3, do_pad=False, **IMAGENET)


@pytest.fixture(scope="module")
def dav2_hf():
    torch.manual_seed(0)
    model = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2).eval()
    return model.hf


def test_dav2_forward_shape_kind_and_pipeline_parity(dav2_hf, tmp_path):
    folder = hf_folder(tmp_path, "dav2", dav2_hf, dav2_processor())
    model = depthlab.create_model("depth_anything_v2_vits", config=folder).eval()
    model.load_pretrained_weights(folder)
    assert isinstance(model, HFDepthModel) and model.depth_info.output_kind == "disparity"
    assert model.input_size_for(480, 640) == (518, 686)  # scale as little as possible, multiples of 14
    assert model.input_size_for(120, 160) == (392, 518)  # small images: the long side gets 518

    with torch.no_grad():  # forward at any multiple of 14, and off-multiples (resized back like the processor)
        for size in [(70, 98), (75, 100)]:
            assert model(torch.randn(2, 3, *size))["depth"].shape == (2, 1, *size)

    from PIL import Image

    img = rgb_uint8(120, 160)
    pipe = transformers.pipeline("depth-estimation", model=dav2_hf, image_processor=dav2_processor())
    with torch.no_grad():
        ref = pipe(Image.fromarray(img))["predicted_depth"]
    got = torch.from_numpy(Predictor(model)(img).depth)  # uint8 in: resized as uint8, exactly like the processor
    assert got.shape == (120, 160)
    assert rel_diff(got, ref) < RTOL
    # the same through depthlab's Predictor, from a numpy array, a PIL image and an image file
    predictor = Predictor(model)
    assert predictor.network_size(120, 160) == (392, 518)
    img_path = tmp_path / "img.png"
    Image.fromarray(img).save(img_path)
    for source in (img, Image.fromarray(img), img_path):
        pred = predictor(source)
        assert pred.kind == "disparity" and pred.depth.shape == (120, 160) and pred.depth.dtype == np.float32
        assert rel_diff(torch.from_numpy(pred.depth), ref) < RTOL

    # float images: processor on the float tensor (do_rescale=False) vs depthlab on the same floats
    x = chw(img).float() / 255
    proc = dav2_processor()
    with torch.no_grad():
        inputs = proc(images=x[0], do_rescale=False, return_tensors="pt")
        post = proc.post_process_depth_estimation(dav2_hf(**inputs), target_sizes=[(120, 160)])[0]["predicted_depth"]
    assert rel_diff(Predictor(model).predict_tensor(x)[0, 0], post) < RTOL


def test_dav2_metric_variant_follows_config(tmp_path):
    torch.manual_seed(1)
    model = depthlab.create_model("depth_anything_v2_metric_hypersim_vits", config_overrides=TINY_DAV2).eval()
    assert model.hf.config.depth_estimation_type == "metric" and model.depth_info.max_depth == 20
    assert model.depth_info.output_kind == "metric"
    folder = hf_folder(tmp_path, "metric", model.hf, dav2_processor())
    from PIL import Image

    img = rgb_uint8(64, 90, seed=3)
    pipe = transformers.pipeline("depth-estimation", model=model.hf, image_processor=dav2_processor())
    with torch.no_grad():
        ref = pipe(Image.fromarray(img))["predicted_depth"]
    loaded = depthlab.create_model("depth_anything_v2_metric_hypersim_vits", config=folder)
    loaded.load_pretrained_weights(folder)
    pred = Predictor(loaded)(img)
    assert pred.kind == "metric" and pred.unit == "m"
    got = torch.from_numpy(pred.depth)
    assert rel_diff(got, ref) < RTOL
    assert 0 <= float(got.min()) and float(got.max()) <= 20.0 + 1e-3  # sigmoid x max_depth, then bicubic


def test_dav2_relative_weights_into_a_metric_head_for_finetuning(dav2_hf, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "relative.safetensors"
    save_file({k: v.contiguous() for k, v in dav2_hf.state_dict().items()}, str(path))
    model = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, metric_head=True,
                                  max_depth=20, checkpoint_path=str(path)).eval()
    assert model.depth_info.output_kind == "metric" and model.depth_info.max_depth == 20
    assert model.hf.config.depth_estimation_type == "metric"
    for k, v in dav2_hf.state_dict().items():
        assert torch.equal(model.hf.state_dict()[k], v)
    with torch.no_grad():
        d = model(torch.randn(1, 3, 70, 70))["depth"]
    assert 0 <= float(d.min()) and float(d.max()) <= 20


# --------------------------------------------------------------------------------------------------
# Official Depth-Anything-V2 checkpoints


def to_official_layout(hf_state: dict, num_layers: int) -> dict:
    """transformers layout -> the official repository's key names (written out by hand, independently of
    the converter's rules): what ``depth_anything_v2_vits.pth`` holds."""
    out = {}
    emb = "backbone.embeddings."
    out["pretrained.cls_token"] = hf_state[emb + "cls_token"]
    out["pretrained.mask_token"] = hf_state[emb + "mask_token"]
    out["pretrained.pos_embed"] = hf_state[emb + "position_embeddings"]
    for p in ("weight", "bias"):
        out[f"pretrained.patch_embed.proj.{p}"] = hf_state[emb + f"patch_embeddings.projection.{p}"]
        out[f"pretrained.norm.{p}"] = hf_state[f"backbone.layernorm.{p}"]
    style = convert_dav2.attention_style_of(hf_state)
    q, k, v, o = {"q_proj": ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
                  "query": ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                            "attention.output.dense")}[style]
    for i in range(num_layers):
        src, dst = f"backbone.encoder.layer.{i}.", f"pretrained.blocks.{i}."
        for p in ("weight", "bias"):
            out[dst + f"attn.qkv.{p}"] = torch.cat([hf_state[src + f"{q}.{p}"], hf_state[src + f"{k}.{p}"],
                                                    hf_state[src + f"{v}.{p}"]], dim=0)
            out[dst + f"attn.proj.{p}"] = hf_state[src + f"{o}.{p}"]
            for n in ("norm1", "norm2"):
                out[dst + f"{n}.{p}"] = hf_state[src + f"{n}.{p}"]
            for n in ("fc1", "fc2"):
                out[dst + f"mlp.{n}.{p}"] = hf_state[src + f"mlp.{n}.{p}"]
        out[dst + "ls1.gamma"] = hf_state[src + "layer_scale1.lambda1"]
        out[dst + "ls2.gamma"] = hf_state[src + "layer_scale2.lambda1"]
    refinenet_of_fusion_layer = {0: 4, 1: 3, 2: 2, 3: 1}
    for i in range(4):
        for p in ("weight", "bias"):
            out[f"depth_head.projects.{i}.{p}"] = hf_state[f"neck.reassemble_stage.layers.{i}.projection.{p}"]
            if i != 2:
                out[f"depth_head.resize_layers.{i}.{p}"] = hf_state[f"neck.reassemble_stage.layers.{i}.resize.{p}"]
            r = f"depth_head.scratch.refinenet{refinenet_of_fusion_layer[i]}."
            f = f"neck.fusion_stage.layers.{i}."
            out[r + f"out_conv.{p}"] = hf_state[f + f"projection.{p}"]
            for u in (1, 2):
                for c in (1, 2):
                    out[r + f"resConfUnit{u}.conv{c}.{p}"] = hf_state[f + f"residual_layer{u}.convolution{c}.{p}"]
        out[f"depth_head.scratch.layer{i + 1}_rn.weight"] = hf_state[f"neck.convs.{i}.weight"]
    for p in ("weight", "bias"):
        out[f"depth_head.scratch.output_conv1.{p}"] = hf_state[f"head.conv1.{p}"]
        out[f"depth_head.scratch.output_conv2.0.{p}"] = hf_state[f"head.conv2.{p}"]
        out[f"depth_head.scratch.output_conv2.2.{p}"] = hf_state[f"head.conv3.{p}"]
    assert len(out) == len(hf_state) - 2 * 3 * num_layers + 2 * num_layers  # q,k,v (w,b) fused into qkv (w,b)
    return {key: t.clone() for key, t in out.items()}


@pytest.fixture()
def official_pth(dav2_hf, tmp_path):
    state = to_official_layout(dav2_hf.state_dict(), dav2_hf.config.backbone_config.num_hidden_layers)
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(state, path)
    return path, state


def test_official_pth_converts_to_identical_outputs(dav2_hf, official_pth):
    path, _ = official_pth
    model = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, checkpoint_path=str(path)).eval()
    x = torch.randn(1, 3, 70, 98, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = dav2_hf(pixel_values=x).predicted_depth
        got = model(x)["depth"][:, 0]
    assert float((got - expected).abs().max()) == 0.0


def test_official_pth_unknown_and_missing_keys_are_reported(official_pth, tmp_path):
    _, state = official_pth
    bad = dict(state)
    bad["pretrained.blocks.0.attn.rope.freqs"] = torch.zeros(3)
    with pytest.raises(convert_dav2.DAV2ConversionError, match="pretrained.blocks.0.attn.rope.freqs"):
        convert_dav2.official_to_hf(bad)
    p = tmp_path / "unknown.pth"
    torch.save(bad, p)
    with pytest.raises(KeyError, match="unknown key"):
        depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, checkpoint_path=str(p))

    missing = {k: v for k, v in state.items() if k != "depth_head.scratch.refinenet2.out_conv.weight"}
    p = tmp_path / "missing.pth"
    torch.save(missing, p)
    with pytest.raises(RuntimeError, match="missing.*neck.fusion_stage.layers.2.projection.weight"):
        depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, checkpoint_path=str(p))


def test_older_transformers_key_names_load(dav2_hf, tmp_path):
    """A model.safetensors written by transformers 4 (attention.attention.query ...) loads identically."""
    from safetensors.torch import save_file

    renames = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
               "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}
    old = {}
    for k, v in dav2_hf.state_dict().items():
        for new_name, old_name in renames.items():
            k = k.replace(new_name, old_name)
        old[k] = v.contiguous()
    assert any("attention.attention.query" in k for k in old)
    path = tmp_path / "model.safetensors"
    save_file(old, str(path))
    model = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2, checkpoint_path=str(path))
    for k, v in dav2_hf.state_dict().items():
        assert torch.equal(model.hf.state_dict()[k], v), k


def test_create_model_loads_a_local_hf_folder(dav2_hf, tmp_path):
    folder = hf_folder(tmp_path, "dav2", dav2_hf, dav2_processor())
    model = depthlab.create_model("depth_anything_v2_vits", checkpoint_path=folder)
    assert model.hf.config.backbone_config.hidden_size == 32
    for k, v in dav2_hf.state_dict().items():
        assert torch.equal(model.hf.state_dict()[k], v)


def test_offline_without_weights_names_hub_id_and_local_alternatives(tmp_path):
    code = textwrap.dedent("""
        import json, depthlab
        from depthlab.errors import WeightsUnavailableError
        from tiny_models import TINY_DAV2
        out = {}
        try:
            depthlab.create_model("depth_anything_v2_vits", pretrained=True)
        except WeightsUnavailableError as e:
            out["create_model"] = str(e)
        m = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2)
        try:
            m.load_pretrained_weights(None)
        except WeightsUnavailableError as e:
            out["adapter"] = str(e)
        try:
            depthlab.create_model("depth_anything_v1_vits", config_overrides=TINY_DAV2, pretrained=True)
        except WeightsUnavailableError as e:
            out["v1"] = str(e)
        print(json.dumps(out))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("HF_HUB_CACHE", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    msgs = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(msgs) == {"create_model", "adapter", "v1"}
    v1 = msgs.pop("v1")
    for msg in msgs.values():
        assert "depth-anything/Depth-Anything-V2-Small-hf" in msg and "checkpoint_path" in msg
    assert "depth_anything_v2_vits.pth" in msgs["adapter"] and "config.json" in msgs["adapter"]
    # V1, one line naming both ways: the hub id and a local folder / official file as checkpoint_path
    assert "\n" not in v1 and "LiheYoung/depth-anything-small-hf" in v1 and "checkpoint_path" in v1
    assert "depth_anything_vits14.pth" in v1 and "config.json" in v1


def test_dav1_matches_transformers_pipeline_and_loads_the_official_file(tmp_path):
    """Depth Anything V1 through depthlab == transformers' depth-estimation pipeline on the same (tiny) weights;
    the official ``depth_anything_vits14.pth`` layout (V2's key names) loads to identical outputs."""
    from depthlab.models.foundation.hf_depth import dav1_config

    torch.manual_seed(7)
    # a tiny V1: five blocks, the DPT head on the last four (as dav1_config taps them)
    tiny = {**TINY_DAV2, "backbone_config": {**TINY_DAV2["backbone_config"], "num_hidden_layers": 5,
                                             "out_indices": [2, 3, 4, 5]}}
    hf = depthlab.create_model("depth_anything_v1_vits", config_overrides=tiny).hf.eval()
    assert hf.config.backbone_config.out_indices == [2, 3, 4, 5]
    assert dav1_config("vits")["model_type"] == "depth_anything"
    folder = hf_folder(tmp_path, "dav1", hf, dav2_processor())
    model = depthlab.create_model("depth_anything_v1_vits", checkpoint_path=folder).eval()
    assert isinstance(model, HFDepthModel) and model.depth_info.output_kind == "disparity"
    assert model.input_size_for(480, 640) == (518, 686)

    from PIL import Image

    img = rgb_uint8(60, 84, seed=3)
    pipe = transformers.pipeline("depth-estimation", model=hf, image_processor=dav2_processor())
    with torch.no_grad():
        ref = pipe(Image.fromarray(img))["predicted_depth"]
    pred = Predictor(model)(img)
    assert pred.kind == "disparity" and pred.depth.shape == (60, 84)
    assert rel_diff(torch.from_numpy(pred.depth), ref) < RTOL

    path = tmp_path / "depth_anything_vits14.pth"
    torch.save(to_official_layout(hf.state_dict(), 5), path)
    official = depthlab.create_model("depth_anything_v1_vits", config_overrides=tiny, checkpoint_path=str(path)).eval()
    x = torch.randn(1, 3, 70, 98, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(official(x)["depth"][:, 0], hf(pixel_values=x).predicted_depth)


# --------------------------------------------------------------------------------------------------
# ZoeDepth and DPT


def test_zoedepth_matches_transformers_pipeline(tmp_path):
    torch.manual_seed(2)
    hf = depthlab.create_model("zoedepth_nyu", config_overrides=TINY_ZOEDEPTH).hf.eval()
    proc = transformers.ZoeDepthImageProcessor(size={"height": 64, "width": 96})
    folder = hf_folder(tmp_path, "zoe", hf, proc)
    model = depthlab.create_model("zoedepth_nyu", config=folder).eval()
    model.load_pretrained_weights(folder)
    assert model.resize_policy.size == (64, 96) and model.depth_info.output_kind == "metric"
    assert model.depth_info.input_size is None  # feed native size: the model pads and resizes itself

    from PIL import Image

    img = rgb_uint8(50, 70, seed=5)
    pipe = transformers.pipeline("depth-estimation", model=hf, image_processor=proc)
    with torch.no_grad():
        ref = pipe(Image.fromarray(img))["predicted_depth"]
        assert model(model.preprocess(chw(img).float() / 255))["depth"].shape == (1, 1, 50, 70)
    pred = Predictor(model)(Image.fromarray(img))
    assert pred.kind == "metric" and pred.depth.shape == (50, 70)
    got = torch.from_numpy(pred.depth)
    assert rel_diff(got, ref) < RTOL
    assert float(got.min()) > 0


def test_dpt_matches_transformers_pipeline(tmp_path):
    torch.manual_seed(3)
    hf = depthlab.create_model("midas_dpt_large", config_overrides=TINY_DPT).hf.eval()
    proc = transformers.DPTImageProcessor(size={"height": 64, "width": 64})  # DPT-MiDaS: square, no aspect kept
    folder = hf_folder(tmp_path, "dpt", hf, proc)
    model = depthlab.create_model("midas_dpt_large", config=folder).eval()
    model.load_pretrained_weights(folder)
    assert model.depth_info.mean == (0.5, 0.5, 0.5) and model.depth_info.output_kind == "disparity"
    assert model.input_size_for(50, 70) == (64, 64)

    from PIL import Image

    img = rgb_uint8(50, 70, seed=6)
    pipe = transformers.pipeline("depth-estimation", model=hf, image_processor=proc)
    with torch.no_grad():
        ref = pipe(Image.fromarray(img))["predicted_depth"]
    pred = Predictor(model)(img)
    assert pred.kind == "disparity" and Predictor(model).network_size(50, 70) == (64, 64)
    assert rel_diff(torch.from_numpy(pred.depth), ref) < RTOL


@pytest.mark.parametrize("name", ["midas_dpt_beit_large_512", "midas_dpt_swinv2_tiny_256"])
def test_midas31_matches_transformers_pipeline(name, tmp_path):
    """MiDaS v3.1 (DPT + BEiT / SwinV2 backbone) == transformers' pipeline with the hub processor's settings
    (square resize, no aspect kept; BEiT's processor rounds to multiples of 32), on tiny random weights."""
    from tiny_models import TEST_KWARGS

    torch.manual_seed(8)
    hf = depthlab.create_model(name, **TEST_KWARGS[name]).hf.eval()
    extra = {"ensure_multiple_of": 32} if "beit" in name else {}
    proc = transformers.DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False, **extra)
    folder = hf_folder(tmp_path, "midas31", hf, proc)
    model = depthlab.create_model(name, checkpoint_path=folder).eval()
    assert model.depth_info.output_kind == "disparity" and model.depth_info.mean == (0.5, 0.5, 0.5)
    assert model.input_size_for(50, 70) == (64, 64) and model.fixed_network_size == (64, 64)

    from PIL import Image

    img = rgb_uint8(50, 70, seed=9)
    pipe = transformers.pipeline("depth-estimation", model=hf, image_processor=proc)
    with torch.no_grad():
        ref = pipe(Image.fromarray(img))["predicted_depth"]
        off_size = model(torch.randn(1, 3, 48, 48))["depth"]  # backbone variants run at their own size only
    pred = Predictor(model)(img)
    assert pred.kind == "disparity" and pred.depth.shape == (50, 70) and off_size.shape == (1, 1, 48, 48)
    assert rel_diff(torch.from_numpy(pred.depth), ref) < RTOL


# --------------------------------------------------------------------------------------------------
# Marigold


def test_marigold_matches_diffusers_pipeline():
    diffusers = pytest.importorskip("diffusers")
    from tiny_models import TINY_MARIGOLD

    torch.manual_seed(0)
    model = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD, num_inference_steps=2,
                                  ensemble_size=2, processing_resolution=32, seed=7).eval()
    model.empty_text_embedding.normal_()  # a non-trivial conditioning
    assert model.depth_info.output_kind == "relative" and model.depth_info.input_size is None

    img = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(8))
    pipe = diffusers.MarigoldDepthPipeline(
        unet=model.unet, vae=model.vae, scheduler=model.scheduler, text_encoder=None, tokenizer=None,
        prediction_type="depth", scale_invariant=True, shift_invariant=True)
    pipe.empty_text_embedding = model.empty_text_embedding.clone()
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref = pipe(img, num_inference_steps=2, ensemble_size=2, processing_resolution=32,
                   generator=torch.Generator().manual_seed(7), output_type="pt").prediction
        got = model(model.preprocess(img))["depth"]
    via_predictor = Predictor(model).predict_tensor(img)
    again = Predictor(model).predict_tensor(img)
    assert torch.equal(via_predictor, got)
    assert got.shape == (1, 1, 40, 52)
    assert rel_diff(got, ref) < RTOL
    assert torch.equal(got, again)  # seeded on every call: reproducible
    assert 0 <= float(got.min()) and float(got.max()) <= 1


# --------------------------------------------------------------------------------------------------
# Every adapter as a frozen teacher: Predictor.predict_tensor on batches of [0,1] tensors


@pytest.mark.parametrize("name", ["depth_anything_v2_vits", "depth_anything_v2_metric_vkitti_vits", "zoedepth_nyu",
                                  "zoedepth_nyu_kitti", "midas_dpt_large", "midas_dpt_hybrid", "marigold_depth",
                                  "depth_anything_v1_vits", "midas_dpt_beit_base_384", "midas_dpt_swinv2_tiny_256"])
def test_predict_tensor_on_batches_for_every_family(name):
    from tiny_models import TEST_KWARGS

    if name == "marigold_depth":
        pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = depthlab.create_model(name, **TEST_KWARGS[name]).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    predictor = Predictor(model, batch_size=2)  # two chunks: 2 + 1
    out = predictor.predict_tensor(images)
    assert out.shape == (3, 1, 40, 56) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert predictor.kind == model.depth_info.output_kind
    if predictor.kind == "metric":
        assert float(out.min()) > 0 and float(out.max()) <= model.depth_info.max_depth + 1e-3
    if name != "marigold_depth":  # deterministic networks: a batch equals its images one by one
        single = torch.cat([predictor.predict_tensor(images[i:i + 1]) for i in range(3)])
        assert rel_diff(out, single) < RTOL


def test_dpt_fixed_network_size_any_input_size():
    """DPT takes square token grids only: other sizes (the zoo's 480x640 cost count) go through its fixed size."""
    import torch.nn.functional as F

    torch.manual_seed(4)
    model = depthlab.create_model("midas_dpt_large", config_overrides=TINY_DPT, input_size=64).eval()
    assert model.fixed_network_size == (64, 64)
    x = torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(x)["depth"]
        net = F.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False)
        ref = F.interpolate(model.hf(pixel_values=net).predicted_depth[:, None], size=(48, 80), mode="bicubic",
                            align_corners=False)
        square = model(torch.randn(1, 3, 96, 96))["depth"]  # square inputs go straight through
    assert out.shape == (1, 1, 48, 80) and torch.equal(out, ref)
    assert square.shape == (1, 1, 96, 96)


def test_marigold_checkpoint_keeps_the_adopted_pipelines_scheduler(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from tiny_models import TINY_MARIGOLD

    torch.manual_seed(0)
    model = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD, processing_resolution=32)
    # a hub pipeline may ship another scheduler class and settings than the default DDIM (trailing)
    lcm = diffusers.LCMScheduler(num_train_timesteps=1000, beta_end=0.02, timestep_spacing="trailing",
                                 prediction_type="v_prediction")
    pipe = diffusers.MarigoldDepthPipeline(unet=model.unet, vae=model.vae, scheduler=lcm, text_encoder=None,
                                           tokenizer=None, prediction_type="depth", scale_invariant=True,
                                           shift_invariant=True, default_denoising_steps=1,
                                           default_processing_resolution=32)
    pipe.empty_text_embedding = torch.randn(1, 2, 16)
    model.adopt_pipeline(pipe)
    rebuilt = depthlab.load_checkpoint(depthlab.save_checkpoint(model, tmp_path / "m.safetensors"))
    assert type(rebuilt.scheduler).__name__ == "LCMScheduler" and rebuilt.scheduler.config.beta_end == 0.02
    assert rebuilt.num_inference_steps == 1
    img = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(Predictor(rebuilt).predict_tensor(img), Predictor(model).predict_tensor(img))
    # a scheduler object works too; a non-scheduler class or an unknown setting is refused
    again = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD, scheduler=lcm)
    assert type(again.scheduler).__name__ == "LCMScheduler" and again.scheduler.config.beta_end == 0.02
    for name in ("NoSuchScheduler", "AutoencoderKL"):
        with pytest.raises(ValueError, match=f"unknown diffusers scheduler '{name}'"):
            depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD,
                                  scheduler={"class_name": name, "config": {}})
    with pytest.raises(TypeError, match=r"DDIMScheduler has no settings \['beta_ends'\]"):
        depthlab.create_model("marigold_depth", config_overrides={**TINY_MARIGOLD, "scheduler": {"beta_ends": 1}})


def test_marigold_counts_its_macs_like_a_real_forward():
    """Marigold's part-by-part MAC count (needed because diffusers' value checks cannot run on the meta
    device) equals a flop count of the real pipeline run, attention included."""
    pytest.importorskip("diffusers")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from tiny_models import TINY_MARIGOLD
    from depthlab.evaluation.speed import count_macs

    model = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD, num_inference_steps=2,
                                  ensemble_size=2, processing_resolution=32).eval()
    img = torch.rand(1, 3, 40, 52)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as c:
        model(model.preprocess(img))
    assert count_macs(model, (40, 52)) == c.get_total_flops() / 2 > 0
    with torch.device("meta"):
        on_meta = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD, num_inference_steps=2,
                                        ensemble_size=2, processing_resolution=32)
    assert count_macs(on_meta, (40, 52), device="meta") == c.get_total_flops() / 2


def test_offline_hub_reads_the_cache_only_and_names_every_local_option(monkeypatch):
    """Without the hub, loads must not sit in huggingface_hub's connection retries (~30 s): they go to the
    cache only (local_files_only) and fail with one message naming the ways to pass local weights."""
    msg, seen = offline_hub_load(monkeypatch, "depth_anything_v2_vits")
    assert seen["local_files_only"] is True and seen["source"].startswith("depth-anything/")
    assert "HF_HUB_OFFLINE is set" in msg and "\n" not in msg
    for way in ("checkpoint_path=PATH", "--checkpoint-path PATH", "NAME:PATH", "distill.teacher_checkpoint=PATH"):
        assert way in msg


def test_marigold_loaded_from_a_folder_is_trainable(tmp_path, monkeypatch):
    """Loading must not happen under inference mode: modules built there get inference-tensor parameters
    that no later load_state_dict or backward pass can touch."""
    diffusers = pytest.importorskip("diffusers")
    from tiny_models import TINY_MARIGOLD

    torch.manual_seed(0)
    src = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD, processing_resolution=32)
    (tmp_path / "mg").mkdir()

    def fake_from_pretrained(source, **kwargs):  # builds its modules the way diffusers does: inside the call
        twin = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD)
        pipe = diffusers.MarigoldDepthPipeline(unet=twin.unet, vae=twin.vae, scheduler=twin.scheduler,
                                               text_encoder=None, tokenizer=None, prediction_type="depth")
        pipe.empty_text_embedding = twin.empty_text_embedding
        return pipe

    monkeypatch.setattr(diffusers.MarigoldDepthPipeline, "from_pretrained", fake_from_pretrained)
    model = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD, processing_resolution=32,
                                  checkpoint_path=tmp_path / "mg")
    assert not any(p.is_inference() for p in model.parameters())
    model.load_state_dict(src.state_dict())  # raised "Inplace update to inference tensor" before
    x = torch.randn(1, 8, 4, 4)
    model.unet(x, torch.tensor(1), encoder_hidden_states=model.empty_text_embedding).sample.sum().backward()


def test_marigold_runs_the_study_sampling_10_steps_times_the_ensemble():
    """The zero-shot study's Marigold setting (10 denoising steps, predictions ensembled) reaches diffusers'
    pipeline: steps x ensemble UNet evaluations, one VAE decode per member, one ensembled map out."""
    pytest.importorskip("diffusers")
    import yaml

    from depthlab.experiment import load_spec
    from tiny_models import TINY_MARIGOLD

    study = os.path.join(os.path.dirname(__file__), "..", "configs", "studies", "zero_shot.yaml")
    for smoke in (False, True):
        spec, _ = load_spec(study, smoke=smoke)
        (mg,) = [m for m in spec.benchmark.models if isinstance(m, dict) and m["name"] == "marigold_depth"]
        assert mg["kwargs"]["num_inference_steps"] == 10 and mg["kwargs"]["ensemble_size"] > 1
    assert yaml.safe_load(open(study))["benchmark"]["models"][-1]["kwargs"]["ensemble_size"] == 10

    torch.manual_seed(0)
    model = depthlab.create_model("marigold_depth", config_overrides=TINY_MARIGOLD, num_inference_steps=10,
                                  ensemble_size=3, processing_resolution=32).eval()
    unet_items, decodes = [], []
    model.unet.register_forward_hook(lambda m, args, out: unet_items.append(int(args[0].shape[0])))
    model.vae.decoder.register_forward_hook(lambda m, args, out: decodes.append(int(args[0].shape[0])))
    with torch.no_grad():
        out = model(model.preprocess(torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(1))))["depth"]
    assert sum(unet_items) == 10 * 3 and sum(decodes) == 3
    assert out.shape == (1, 1, 24, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
