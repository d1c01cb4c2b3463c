"""PyTorch timing of the MIDM pipeline, stage by stage, for side-by-side comparison with `midm bench`.

    python -m train.bench_torch [--weights weights] [--runs 5] [--json]
    python -m train.bench_torch --official --export /tmp/midm-official [--runs 2] [--json]
    python -m train.bench_torch --flops-only [--official]
    python -m train.bench_torch --device cuda [--precision f16|bf16] ...

The stages and their keys are those of `midm bench` (src/bench/mod.rs): encode, condition_side,
exemplar_side, correlation_warp, iteration_features, cycle_check, unet, decode, translation,
first_step. Each is timed after warm-up as the median over runs, under `torch.inference_mode()`,
with `torch.set_num_threads` = $RAYON_NUM_THREADS (else all cores), the same thread count candle
uses. The FLOPs of each stage are counted with `torch.utils.flop_counter.FlopCounterMode`
(convolutions and matrix products only, 2 per multiply-add), an independent check of the
analytical counter in `src/bench/flops.rs`.

`--official` builds the official CelebA-HQ size with PyTorch's default random initialisation;
`--export DIR` writes it as DIR/model.safetensors + DIR/config.yaml (exactly the layout of the
shipped `weights/`), so that `midm bench --compare-torch --official` times candle on the very same
weights. `midm bench --compare-torch` runs this script and prints the ratios.

`--device cuda` runs on the GPU (inputs drawn on the CPU and moved, so both devices time the same
tensors; every timing ends with `torch.cuda.synchronize()`). `--precision f16|bf16` runs the UNet and
the autoencoder's decoder under `torch.autocast` (PyTorch's usual half-precision inference), the
same split as `midm bench --precision`: the encoder, correspondence networks and matching stay f32.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from .config import corr_kwargs, default_config
from .midm import MIDM
from .ops import correlation, downsample_label, fb_mask, fbcheck, feature_normalize, get_flow, seg_input, soft_warp


def official_config():
    """The official CelebA-HQ edge-to-face configuration (as `midm::bench::official_config`)."""
    cfg = default_config()
    p = cfg["model"]["params"]
    p["image_size"] = 64
    p["unet_config"]["params"].update(image_size=64, model_channels=224, channel_mult=[1, 2, 3, 4],
                                      num_res_blocks=2, attention_resolutions=[8, 4, 2], num_head_channels=32)
    fs = p["first_stage_config"]["params"]
    fs["n_embed"] = 8192
    fs["ddconfig"].update(resolution=256, ch=128, ch_mult=[1, 2, 4], num_res_blocks=2)
    cfg["midms"].update(label_nc=15, N_CH=256, corr_ndf=64, spade_nhidden=128, image_size=256)
    return cfg


def export(model, cfg, out):
    import yaml
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    tensors = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt", "stages": "random"})
    with open(os.path.join(out, "config.yaml"), "w") as f:
        yaml.safe_dump({"model": cfg["model"], "midms": cfg["midms"]}, f, sort_keys=False)


def load(weights):
    from safetensors.torch import load_file
    import yaml

    cfg = yaml.safe_load(open(os.path.join(weights, "config.yaml")))
    model = MIDM(cfg, **corr_kwargs(cfg))
    model.load_state_dict(load_file(os.path.join(weights, "model.safetensors")))
    return model.eval(), cfg


def synchronize():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    synchronize()
    ts = []
    for _ in range(max(runs, 1)):
        t = time.perf_counter()
        fn()
        synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(sorted(ts)) * 1e3, max(runs, 1)


def autocast_outputs(fn, device, dtype):
    """`fn` run under autocast to `dtype`, its tensor result returned in float32."""

    def wrapped(*args, **kwargs):
        with torch.autocast(device.type, dtype=dtype):
            return fn(*args, **kwargs).float()

    return wrapped


def stages(model, size, device):
    """(key, name, fn) of every stage on random inputs (batch 1), as `midm bench` builds them."""
    g = torch.Generator().manual_seed(0)
    nc = model.label_nc
    cond = torch.rand(1, nc, size, size, generator=g).to(device)
    ex = (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(device)
    ex_label = torch.rand(1, nc, size, size, generator=g).to(device)
    ae = model.ae
    latent = ae.encode(ex)
    hw = latent.shape[2:]
    # seg_enc's input carries the fill channel for a model with label_fill, made outside the timed
    # stage as `midm bench` makes it (`condition_on_grid`).
    seg_in, label_ds = seg_input(cond, hw, model.label_downsample, model.label_fill)
    ref_label_ds = downsample_label(ex_label, hw, model.label_downsample)

    # Both sides are the sampler's own code (MIDM.condition_feats / exemplar_feats), so the bench
    # cannot drift from it again (it once fed seg_enc the line channel alone).
    def condition_side():
        m, _, out = model.condition_feats(seg_in, label_ds)
        return out, m

    def exemplar_side():
        m, _, out = model.exemplar_feats(latent, ref_label_ds)
        return out, feature_normalize(m)

    # The later stages' inputs come from the timed stages themselves, so each is written once.
    trg_out, trg_m = condition_side()
    ref_out, _ = exemplar_side()
    corr = correlation(trg_out, ref_out)
    t = torch.full((1,), 500, dtype=torch.long, device=device)

    unet_cond = model.unet_cond(cond, latent.shape[2:])  # the drawing, for a UNet that sees it

    def cycle():
        return fb_mask(fbcheck(*get_flow(corr))[0])

    def translation():
        return model.translate(cond, ex, ex_label, generator=torch.Generator(device).manual_seed(0))

    def first_step():
        # Everything the sampler does before its first event: encode, both sides, initial warp.
        z = ae.encode(ex)
        return model.match(cond, z, ex_label, regions=model.regions(cond, ex, z.shape[2:]))["warped"]

    return [
        ("encode", "encode (autoencoder)", lambda: ae.encode(ex)),
        ("condition_side", "correspondence: condition side", condition_side),
        ("exemplar_side", "correspondence: exemplar side", exemplar_side),
        ("correlation_warp", "correlation + soft warp", lambda: soft_warp(latent, correlation(trg_out, ref_out))),
        ("iteration_features", "iteration features (F_Y^iter)",
         lambda: feature_normalize(model.iter_enc(latent, seg=trg_m))),
        ("cycle_check", "cycle check (flow + fb + mask)", cycle),
        ("unet", "UNet pass", lambda: model.diff_model.eps(latent, t, unet_cond)),
        ("decode", "decode (VQ + decoder)", lambda: ae.decode(latent)),
        ("translation", "whole translation (16-step loop + refinement)", translation),
        ("first_step", "run -> first streamed step", first_step),
    ]


def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights", help="exported model folder (config.yaml + model.safetensors)")
    ap.add_argument("--official", action="store_true", help="official CelebA-HQ size, random weights")
    ap.add_argument("--export", help="with --official: write the random model here for candle")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object (keys as `midm bench`)")
    ap.add_argument("--stages-only", action="store_true",
                    help="skip whole translations; estimate one as the sum of its stages")
    ap.add_argument("--flops-only", action="store_true", help="count FLOPs, no timing")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--precision", choices=["f32", "f16", "bf16"], default="f32",
                    help="f16/bf16: run under torch.autocast")
    a = ap.parse_args()
    device = torch.device(a.device)

    threads = int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(1012)
    if a.official:
        cfg = official_config()
        model = MIDM(cfg, **corr_kwargs(cfg)).eval()
        if a.export:
            export(model, cfg, a.export)
    else:
        model, cfg = load(a.weights)
    size = cfg["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["resolution"]
    model = model.to(device)
    half = {"f16": torch.float16, "bf16": torch.bfloat16}.get(a.precision)
    if half is not None:
        unet = model.diff_model.model.diffusion_model
        unet.forward = autocast_outputs(unet.forward, device, half)
        # The VQ codebook search stays f32 (as in candle): only the decoder network is autocast.
        model.ae.decode_noquant = autocast_outputs(model.ae.decode_noquant, device, half)

    out = {}
    with torch.inference_mode():
        for key, name, fn in stages(model, size, device):
            if a.stages_only and key in ("translation", "first_step"):
                continue
            big = key in ("translation", "first_step")
            # The whole translation is 24 UNet passes: count it from its parts, time it.
            flops = None if key == "translation" else count_flops(fn)
            if a.flops_only:
                ms, runs = None, 0
            else:
                runs = min(a.runs, 3) if big else a.runs
                ms, runs = timed(fn, min(a.warmup, 1) if big else a.warmup, runs)
            out[key] = {"name": name, "ms": ms, "runs": runs,
                        "gflop_mm": None if flops is None else flops / 1e9}
    if a.stages_only and not a.flops_only:
        ms = lambda k: out[k]["ms"]
        # Same sum as `midm::bench::estimate_translation`: 24 UNet passes, 2 re-matchings.
        est = (ms("encode") + ms("condition_side") + ms("exemplar_side") + ms("correlation_warp")
               + 2 * (ms("iteration_features") + ms("correlation_warp") + ms("cycle_check"))
               + 24 * ms("unet") + ms("decode"))
        out["translation_est"] = {"name": "whole translation, sum of stages (estimate)", "ms": est, "runs": 0,
                                  "gflop_mm": None}
    meta = {"torch": torch.__version__, "threads": threads, "image_size": size,
            "mkldnn": torch.backends.mkldnn.is_available(), "device": str(device), "precision": a.precision}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    if a.json:
        json.dump({"meta": meta, "stages": out}, sys.stdout)
        print()
        return
    print(f"PyTorch {meta['torch']}, {meta.get('gpu', f'{threads} threads')}, {a.precision}, image {size}x{size}")
    print(f"{'stage':<48} {'median ms':>11} {'runs':>5} {'GFLOP(mm)':>10}")
    for k, v in out.items():
        ms = "-" if v["ms"] is None else f"{v['ms']:.2f}"
        gf = "-" if v["gflop_mm"] is None else f"{v['gflop_mm']:.3f}"
        print(f"{v['name']:<48} {ms:>11} {v['runs']:>5} {gf:>10}")


if __name__ == "__main__":
    main()
