"""Marigold depth as a depthlab model: a thin adapter over diffusers' ``MarigoldDepthPipeline``.

Marigold (Ke et al., CVPR 2024) fine-tunes Stable Diffusion 2 to denoise a depth latent conditioned on
the image latent. Its output is affine-invariant *depth* in [0, 1] (output kind ``relative``: true
depth = s * pred + t), not disparity. Evaluate it with least-squares scale and shift in depth space
(protocol preset ``marigold``).

``forward(x (B,3,H,W) normalised with mean = std = 0.5, i.e. x in [-1, 1]) -> {"depth": (B,1,H,W)}`` runs
the diffusers pipeline on the same modules: resize to ``processing_resolution`` (longest side), denoise
``num_inference_steps`` times for each of ``ensemble_size`` noise draws, ensemble, resize back to (H, W).
Feed images at their native size (``depth_info.input_size`` is None); the pipeline resizes itself.
The noise comes from a generator seeded with ``seed`` on every call, so outputs are reproducible
(``seed=None`` draws fresh noise).

The pipeline conditions on the text embedding of the empty prompt only; the adapter computes it once
when weights are loaded and keeps it as the buffer ``empty_text_embedding`` (the CLIP text encoder is
then dropped). diffusers is imported only when a model is built.
"""
from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from depthlab.errors import WeightsUnavailableError, require
from depthlab.models.registry import WeightsInfo, register_model
from depthlab.processing import AdapterProcessor, ProcessorMixin


MARIGOLD_HUB = {"v1-1": "prs-eth/marigold-depth-v1-1", "lcm": "prs-eth/marigold-depth-lcm-v1-0"}
MARIGOLD_PAPER = ("Ke, Obukhov, Huang, Metzger, Daudt, Schindler. Repurposing Diffusion-Based Image Generators "
                  "for Monocular Depth Estimation. CVPR 2024")


def require_diffusers():
    return require("diffusers", "hf", "marigold_depth (an adapter over diffusers)")


# Stable Diffusion 2 shapes (what Marigold fine-tunes); used only for pretrained=False.
SD2_UNET = dict(sample_size=96, in_channels=8, out_channels=4, layers_per_block=2,
                block_out_channels=[320, 640, 1280, 1280],
                down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True)
SD2_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=768,
               block_out_channels=[128, 256, 512, 512],
               down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
               scaling_factor=0.18215)
DDIM_TRAILING = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
                     timestep_spacing="trailing")


class MarigoldDepthModel(ProcessorMixin, nn.Module):
    """UNet + VAE + scheduler of a Marigold depth pipeline behind depthlab's model contract."""

    onnx_exportable = False  # the forward is a denoising loop around diffusers' pipeline, not one graph

    def __init__(self, unet: nn.Module, vae: nn.Module, scheduler, empty_text_embedding: torch.Tensor,
                 prediction_type: str = "depth", scale_invariant: bool = True, shift_invariant: bool = True,
                 num_inference_steps: int | None = None, ensemble_size: int = 1,
                 processing_resolution: int | None = None, seed: int | None = 0, batch_size: int = 1,
                 ensembling_kwargs: dict | None = None, resample_method_input: str = "bilinear",
                 resample_method_output: str = "bilinear", hub_id: str | None = None):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.register_buffer("empty_text_embedding", empty_text_embedding.detach().clone())
        self.prediction_type = prediction_type
        self.scale_invariant = scale_invariant
        self.shift_invariant = shift_invariant
        self.num_inference_steps = num_inference_steps
        self.ensemble_size = int(ensemble_size)
        self.processing_resolution = processing_resolution
        self.seed = seed
        self.batch_size = int(batch_size)
        self.ensembling_kwargs = dict(ensembling_kwargs or {})
        self.resample_method_input = resample_method_input
        self.resample_method_output = resample_method_output
        self.hub_id = hub_id
        self._pipe = None

    def pipeline(self):
        """The diffusers ``MarigoldDepthPipeline`` over this module's UNet / VAE / scheduler (built once)."""
        if self._pipe is None or self._pipe.unet is not self.unet or self._pipe.vae is not self.vae:
            diffusers = require_diffusers()
            pipe = diffusers.MarigoldDepthPipeline(
                unet=self.unet, vae=self.vae, scheduler=self.scheduler, text_encoder=None, tokenizer=None,
                prediction_type=self.prediction_type, scale_invariant=self.scale_invariant,
                shift_invariant=self.shift_invariant, default_denoising_steps=self.num_inference_steps or 4,
                default_processing_resolution=self.processing_resolution if self.processing_resolution is not None else 768)
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe
        self._pipe.empty_text_embedding = self.empty_text_embedding
        return self._pipe

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        images = (x * 0.5 + 0.5).clamp(0.0, 1.0)  # back to [0, 1], what the pipeline takes
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=x.device).manual_seed(int(self.seed))
        pipe = self.pipeline()
        out = pipe(images, num_inference_steps=self.num_inference_steps, ensemble_size=self.ensemble_size,
                   processing_resolution=self.processing_resolution, match_input_resolution=True,
                   resample_method_input=self.resample_method_input,
                   resample_method_output=self.resample_method_output, batch_size=self.batch_size,
                   ensembling_kwargs=self.ensembling_kwargs or None, generator=generator, output_type="pt")
        return {"depth": out.prediction.to(x.dtype)}

    def count_macs(self, height: int, width: int, device="cpu") -> float:
        """MACs of one forward on a ``height x width`` image, counted part by part because the pipeline's
        value checks cannot run on the meta device: VAE encoder once, ``ensemble x steps`` UNet passes and
        ``ensemble`` VAE decodes, at the processing size (longest side ``processing_resolution``, default 768,
        padded to the VAE's factor) -- what diffusers' pipeline runs."""
        from torch.utils.flop_counter import FlopCounterMode

        res = 768 if self.processing_resolution is None else int(self.processing_resolution)
        h, w = (height * res // max(height, width), width * res // max(height, width)) if res > 0 else (height, width)
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        h, w = -(-h // f) * f, -(-w // f) * f
        steps = int(self.num_inference_steps or 4)
        latent = (1, self.vae.config.latent_channels, h // f, w // f)
        text = self.empty_text_embedding.to(device)
        counts = []
        with torch.no_grad():
            for run in ("encode", "unet", "decode"):
                with FlopCounterMode(display=False) as c:
                    if run == "encode":
                        self.vae.encode(torch.zeros(1, 3, h, w, device=device))
                    elif run == "unet":
                        self.unet(torch.zeros(1, self.unet.config.in_channels, *latent[2:], device=device),
                                  torch.tensor(1, device=device), encoder_hidden_states=text)
                    else:
                        self.vae.decode(torch.zeros(latent, device=device))
                counts.append(c.get_total_flops() / 2.0)
        return counts[0] + self.ensemble_size * (steps * counts[1] + counts[2])

    # -- image side: no resizing by the caller; mean = std = 0.5 -----------------------------------------
    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def processor(self) -> AdapterProcessor:
        """No resizing around the network (the pipeline resizes itself); normalisation per ``depth_info``."""
        return AdapterProcessor(self.depth_info)

    # -- weights -------------------------------------------------------------------------------------------
    def load_pretrained_weights(self, checkpoint_path=None, model_name: str = "", strict: bool = True):
        """Hub id (``None``) or a local diffusers folder (model_index.json + unet/ vae/ scheduler/ ...).

        A depthlab checkpoint file (saved by :func:`depthlab.checkpoint.save_checkpoint`) loads too.
        """
        name = model_name or getattr(self, "model_name", "") or "marigold_depth"
        diffusers = require_diffusers()
        if checkpoint_path is not None:
            path = Path(checkpoint_path).expanduser()
            if not path.exists():
                raise WeightsUnavailableError(f"{path}: checkpoint_path does not exist")
            if path.is_file():
                from depthlab.checkpoint import is_depthlab_checkpoint, read_checkpoint
                from depthlab.models.weights import load_into

                if not is_depthlab_checkpoint(path):
                    raise WeightsUnavailableError(
                        f"{path}: Marigold loads from a diffusers folder (model_index.json, unet/, vae/, scheduler/, "
                        "text_encoder/, tokenizer/) or a depthlab checkpoint, not a single weight file")
                state, _ = read_checkpoint(path)
                load_into(self, state, strict=strict, source=str(path))
                return self
        from depthlab.models.weights import LOCAL_WEIGHTS_HINT, hub_unreachable

        source = str(checkpoint_path) if checkpoint_path is not None else self.hub_id
        offline = None if checkpoint_path is not None else hub_unreachable()
        try:
            pipe = diffusers.MarigoldDepthPipeline.from_pretrained(
                source, torch_dtype=torch.float32, local_files_only=checkpoint_path is not None or bool(offline))
        except Exception as e:
            if checkpoint_path is not None:
                raise WeightsUnavailableError(f"{source}: cannot load a Marigold depth pipeline from this folder "
                                              f"({type(e).__name__})") from e
            raise WeightsUnavailableError(
                f"pretrained weights for {name} unavailable: could not get {self.hub_id} from the Hugging Face hub "
                f"or its local cache ({type(e).__name__}{'; ' + offline if offline else ''}). Download it "
                f"once while online (it is cached), or pass a local diffusers folder as PATH: "
                f"{LOCAL_WEIGHTS_HINT}.") from e
        self.adopt_pipeline(pipe)
        return self

    def adopt_pipeline(self, pipe) -> None:
        """Take UNet, VAE, scheduler, pipeline defaults and the empty-prompt embedding from a loaded pipeline."""
        self.unet, self.vae, self.scheduler = pipe.unet, pipe.vae, pipe.scheduler
        cfg = pipe.config
        self.prediction_type = cfg.get("prediction_type") or self.prediction_type
        self.scale_invariant = cfg.get("scale_invariant", self.scale_invariant)
        self.shift_invariant = cfg.get("shift_invariant", self.shift_invariant)
        if self.num_inference_steps is None:
            self.num_inference_steps = cfg.get("default_denoising_steps")
        if self.processing_resolution is None:
            self.processing_resolution = cfg.get("default_processing_resolution")
        if hasattr(self, "model_args"):  # a checkpoint rebuilds with the pipeline's defaults and scheduler
            self.model_args = {**self.model_args, "num_inference_steps": self.num_inference_steps,
                               "processing_resolution": self.processing_resolution,
                               "scheduler": scheduler_spec(self.scheduler)}
        emb = getattr(pipe, "empty_text_embedding", None)
        if emb is None:
            emb = empty_prompt_embedding(pipe.tokenizer, pipe.text_encoder)
        self.empty_text_embedding = emb.detach().to(torch.float32)
        self._pipe = None
        if self.prediction_type not in ("depth", None) and hasattr(self, "depth_info"):
            raise ValueError(f"this pipeline predicts {self.prediction_type!r}; marigold_depth expects 'depth'")


def scheduler_spec(scheduler) -> dict[str, Any]:
    """``{"class_name", "config"}`` of a diffusers scheduler, JSON-safe: what rebuilds it (``marigold_depth(scheduler=...)``)."""
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return {"class_name": type(scheduler).__name__, "config": json.loads(json.dumps(config, default=str))}


@torch.no_grad()
def empty_prompt_embedding(tokenizer, text_encoder) -> torch.Tensor:
    """The text encoder's hidden states for the empty prompt (unpadded): what Marigold conditions on."""
    ids = tokenizer("", padding="do_not_pad", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def _marigold_info(variant: str) -> WeightsInfo:
    return WeightsInfo(
        output_kind="relative", target_encoding="depth", min_depth=0.0, max_depth=1.0, input_size=None,
        multiple_of=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), hub_id=MARIGOLD_HUB[variant],
        license="Marigold code Apache-2.0; weights fine-tuned from Stable Diffusion 2 -- see the prs-eth model card "
                "(CreativeML Open RAIL++-M terms of the base model apply)",
        paper=MARIGOLD_PAPER,
        # fine-tuned on ~74K synthetic images (Hypersim, Virtual KITTI 2) from Stable Diffusion 2 (LAION-5B)
        train_datasets=("hypersim", "vkitti2", "laion-5b"),
        notes="Affine-invariant depth in [0, 1] (near = small). Feed native-size images; the pipeline resizes to "
              "processing_resolution (default 768, longest side) and back. Diffusion: slow on CPU.")


@register_model(_marigold_info("v1-1"), tags=("foundation", "relative", "diffusion", "hf"),
                resize_kwarg="processing_resolution")
def marigold_depth(variant: str = "v1-1", num_inference_steps: int | None = None, ensemble_size: int = 1,
                   processing_resolution: int | None = None, seed: int | None = 0, batch_size: int = 1,
                   ensembling_kwargs: dict | None = None, config_overrides: dict | None = None,
                   scheduler: dict | None = None) -> nn.Module:
    """Marigold depth (diffusers MarigoldDepthPipeline), affine-invariant depth; variant ``v1-1`` or ``lcm``.

    ``scheduler`` (``{"class_name": "DDIMScheduler", "config": {...}}``, as :func:`scheduler_spec` writes it
    into checkpoints) replaces the variant's default scheduler (DDIM trailing, or LCM for ``lcm``).

    ``config_overrides`` (random init only): ``{"unet": {...}, "vae": {...}, "scheduler": {...},
    "text_embedding": [tokens, dim]}`` merged into the Stable Diffusion 2 shapes, for tiny test models.
    """
    if variant not in MARIGOLD_HUB:
        raise ValueError(f"variant must be one of {sorted(MARIGOLD_HUB)}, got {variant!r}")
    diffusers = require_diffusers()
    over = copy.deepcopy(config_overrides or {})
    unknown = set(over) - {"unet", "vae", "scheduler", "text_embedding"}
    if unknown:
        raise TypeError(f"config_overrides keys must be unet/vae/scheduler/text_embedding, got {sorted(unknown)}")
    unet = diffusers.UNet2DConditionModel(**{**SD2_UNET, **over.get("unet", {})})
    vae = diffusers.AutoencoderKL(**{**SD2_VAE, **over.get("vae", {})})
    if scheduler is not None and not isinstance(scheduler, dict):  # a scheduler object: its spec
        scheduler = scheduler_spec(scheduler)
    if scheduler is not None:
        sched_cls = getattr(diffusers, str(scheduler.get("class_name")), None)
        if not (isinstance(sched_cls, type) and issubclass(sched_cls, diffusers.SchedulerMixin)):
            raise ValueError(f"unknown diffusers scheduler {scheduler.get('class_name')!r}")
        sched_cfg: dict[str, Any] = {**scheduler.get("config", {}), **over.get("scheduler", {})}
    else:
        sched_cls = diffusers.LCMScheduler if variant == "lcm" else diffusers.DDIMScheduler
        sched_cfg = {**DDIM_TRAILING, **over.get("scheduler", {})}
    accepted = set(inspect.signature(sched_cls.__init__).parameters) - {"self"}
    unknown = sorted(set(over.get("scheduler", {})) - accepted)
    if unknown:  # from_config would drop them silently
        raise TypeError(f"{sched_cls.__name__} has no settings {unknown}")
    sched = sched_cls.from_config(sched_cfg)
    tokens, dim = over.get("text_embedding", (2, unet.config.cross_attention_dim))
    model = MarigoldDepthModel(
        unet.eval(), vae.eval(), sched, torch.zeros(1, int(tokens), int(dim)),
        num_inference_steps=num_inference_steps, ensemble_size=ensemble_size,
        processing_resolution=processing_resolution, seed=seed, batch_size=batch_size,
        ensembling_kwargs=ensembling_kwargs, hub_id=MARIGOLD_HUB[variant])
    model.depth_info = _marigold_info(variant)
    return model


__all__ = ["MarigoldDepthModel", "marigold_depth", "empty_prompt_embedding", "MARIGOLD_HUB"]
