"""Cost of Marigold at the zero-shot study's sampling setting (10 denoising steps x ensemble of 10).

Counts, for one 480x640 image at Marigold's processing resolution (longest side 768 -> 576x768,
latent 72x96), the multiply-accumulates of the whole diffusers pipeline with
``MarigoldDepthModel.count_macs`` on the meta device (no weights, no compute): VAE encode once,
``steps x ensemble`` UNet passes, ``ensemble`` VAE decodes. Settings compared: 10x10 (the study),
10x1 and 4x1 (the v1-1 pipeline's default steps, one member).

With ``--time`` it also builds the full-size Stable Diffusion 2 UNet and VAE (random weights: the
cost of a pass does not depend on them; nothing is downloaded), times ONE UNet pass, one VAE encode
and one VAE decode on this CPU (after a warm-up pass) and prints the time one 10x10 image would
take, composed from those measured passes: encode + ensemble x (steps x UNet + decode). The
ensembling itself (a small least-squares fit) is not timed. Needs ~5 GB of RAM.

    python benchmarks/marigold_cost.py                 # MACs only (seconds)
    python benchmarks/marigold_cost.py --time          # + measured passes on this CPU (minutes)

Writes ``<--out>/marigold_cost.json`` (default ``outputs/benchmarks``) with the machine description.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

SETTINGS = [(10, 10), (10, 1), (4, 1)]  # (denoising steps, ensemble size)


def count(height: int, width: int, resolution: int) -> list[dict]:
    import depthlab

    with torch.device("meta"):
        model = depthlab.create_model("marigold_depth", processing_resolution=resolution)
    rows = []
    for steps, ensemble in SETTINGS:
        model.num_inference_steps, model.ensemble_size = steps, ensemble
        rows.append({"steps": steps, "ensemble": ensemble, "unet_passes": steps * ensemble,
                     "tmacs": model.count_macs(height, width, device="meta") / 1e12})
    return rows


def time_passes(height: int, width: int, resolution: int) -> dict:
    """Seconds of one UNet pass, one VAE encode and one VAE decode of the full-size networks."""
    import depthlab

    model = depthlab.create_model("marigold_depth", processing_resolution=resolution).eval()
    scale = resolution / max(height, width)
    h, w = round(height * scale / 8) * 8, round(width * scale / 8) * 8
    latent, text = torch.zeros(1, 8, h // 8, w // 8), model.empty_text_embedding
    out = {"processing_size": [h, w]}
    with torch.no_grad():
        model.unet(latent, torch.tensor(1), encoder_hidden_states=text)  # warm-up
        for name, run in [("unet_pass_s", lambda: model.unet(latent, torch.tensor(1), encoder_hidden_states=text)),
                          ("vae_encode_s", lambda: model.vae.encode(torch.zeros(1, 3, h, w))),
                          ("vae_decode_s", lambda: model.vae.decode(torch.zeros(1, 4, h // 8, w // 8)))]:
            t = time.perf_counter()
            run()
            out[name] = time.perf_counter() - t
    out["composed_10x10_s"] = out["vae_encode_s"] + 10 * (10 * out["unet_pass_s"] + out["vae_decode_s"])
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--resolution", type=int, default=768, help="Marigold processing resolution (longest side)")
    p.add_argument("--time", action="store_true", help="also time the full-size passes on this CPU")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="outputs/benchmarks")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = count(*args.size, args.resolution)
    print_table(rows)
    payload = {"size": args.size, "resolution": args.resolution, "macs": rows}
    if args.time:
        payload["cpu"] = time_passes(*args.size, args.resolution)
        print_table([payload["cpu"]])
    print(write_result("marigold_cost", payload, results_dir=args.out))


if __name__ == "__main__":
    main()
