"""The whole training pipeline in one command, inside a wall-clock budget (made for a GPU lease):

    python -m train.pipeline --run train/runs/gpu128 --size 128 --device cuda --minutes 7

Runs the stages of `train.train` as subprocesses, each with `--finish-on-timeout` and a share of the
time left: the autoencoder; then the UNet, the correspondence warm-up and the decoder stage side by
side (they depend only on the frozen autoencoder, and a GPU is far from busy with one of these small
networks); then the end-to-end stage with the shipped model's loss weights; then `train.export`
into `<run>/export`. Stage logs go to `<run>/<stage>.log`. Batches are sized for the device: a GPU
step costs about the same for 8 or 128 images, so it takes large ones.

`--init-from weights` continues an exported model instead (the stage checkpoints of the run that
made it are too large to bring back from a GPU lease): the autoencoder stays as exported, the UNet and
the decoder train on side by side from the exported weights, then the end-to-end stage.
`--ae-anchor A` first fine-tunes the exported autoencoder for colour (`train.train ae --anchor A`
plus AE_COLOUR_FLAGS), so that the later stages train on its latents: models v1 and v1.1 decode
Twemoji's green tree brown and its red heart orange, which caps every translation's colours.
"""
import argparse
import os
import subprocess
import sys
import time

import yaml

from .config import recipe_of
from .train import run_config, seed_run

# Batch sizes per device; the CPU ones are train.train's defaults.
BATCH = {
    "cpu": {"ae": 16, "unet": 32, "warmup": 4, "decoder": 16, "e2e": 4},
    "cuda": {"ae": 64, "unet": 128, "warmup": 32, "decoder": 32, "e2e": 16},
}
# Model v2 (train.pairs): bigger batches, since a GPU step is latency-bound at 16 (17-41 % use).
BATCH_V2 = {"cpu": {"warmup": 8, "e2e": 4}, "cuda": {"warmup": 64, "e2e": 48}}
# Batch-making processes of the v2 stages (the device has 16 cores; the warm-up shares them with
# the unet and decoder stages).
WORKERS_V2 = {"cpu": {"warmup": 0, "e2e": 0}, "cuda": {"warmup": 6, "e2e": 12}}
# The shipped model's re-weighting of the paper's losses for our feature network (losses.py).
CORR_FLAGS = {"warmup": ["--w-perc", "1"], "e2e": ["--w-perc", "1", "--w-style", "0.1", "--iter-align", "10", "--unet-lr", "0"]}
# v2 also trains F_Y^iter in the warm-up; with --vgg the perceptual and contextual losses use VGG16
# features at train.train's weights for them (losses.W_PERC_VGG / W_STYLE_VGG, measured magnitudes).
CORR_FLAGS_VGG = {"warmup": ["--features", "vgg"], "e2e": ["--features", "vgg", "--iter-align", "10", "--unet-lr", "0"]}
# The autoencoder's colour terms (train.train ae --w-ab / --hue): a*b* error of 4x4-pixel means, and
# every hue as often as another. With --ae-anchor, also the anchored fine-tune's crop and rate.
AE_COLOUR_FLAGS = ["--w-ab", "1", "--hue", "0.5"]
AE_ANCHOR_FLAGS = ["--crop", "64", "--lr", "2e-4"]
STARTUP_S = 25  # python + torch import, CUDA context, data load, end-of-stage samples and saving


def stage_cmd(a, stage, minutes):
    # Size, codebook, UNet width and recipe come from the run folder's config.json, written before
    # any stage.
    dev = "cuda" if a.device.startswith("cuda") else "cpu"
    v2 = a.recipe == "v2" and stage in ("warmup", "e2e")
    batch = BATCH_V2[dev][stage] if v2 else BATCH[dev][stage]
    cmd = [sys.executable, "-m", "train.train", stage, "--run", a.run, "--data", a.data, "--device", a.device,
           "--threads", str(a.threads), "--steps", "1000000", "--minutes", f"{minutes:.3f}",
           "--finish-on-timeout", "--batch", str(batch)]
    if stage in ("unet", "warmup", "e2e"):
        cmd += ["--amp", a.amp]
    if stage == "ae" and a.ae_anchor > 0:
        cmd += ["--anchor", str(a.ae_anchor)] + AE_ANCHOR_FLAGS + AE_COLOUR_FLAGS
    elif stage == "ae":
        cmd += ["--crop", "0"] + (AE_COLOUR_FLAGS if a.ae_colour else [])
    if stage == "decoder" and (a.ae_anchor > 0 or a.ae_colour):
        # The decoder stage keeps the colour the ae stage was tuned for, and adds to it (model v1.3:
        # a decoder pass with these terms raised exemplar reconstructions from 0.440 to 0.535 a*b*).
        cmd += AE_COLOUR_FLAGS
    if stage == "unet":
        cmd += ["--lr", str(a.unet_stage_lr)]
    if stage in ("warmup", "e2e") and getattr(a, "corr_ema", 0.0) > 0:
        cmd += ["--corr-ema", str(a.corr_ema)]
    if v2:
        flags = CORR_FLAGS_VGG[stage] + ["--vgg", a.vgg] if a.vgg else CORR_FLAGS[stage]
        return cmd + ["--workers", str(WORKERS_V2[dev][stage])] + flags + (["--warm-iter", "1"] if stage == "warmup" else [])
    return cmd + CORR_FLAGS.get(stage, [])


def run_parallel(a, stages, seconds):
    """Runs `stages` side by side for `seconds` of training each; fails if one did not finish."""
    minutes = max(seconds - STARTUP_S, 10) / 60
    procs = []
    for st in stages:
        log = open(os.path.join(a.run, f"{st}.log"), "a")
        print(f"[pipeline] {st}: {minutes:.2f} min of training, log {log.name}", flush=True)
        procs.append((st, subprocess.Popen(stage_cmd(a, st, minutes), stdout=log, stderr=subprocess.STDOUT), log))
    for st, p, log in procs:
        p.wait()
        log.close()
        if p.returncode != 0:
            raise SystemExit(f"[pipeline] stage {st} failed (exit {p.returncode}): see {a.run}/{st}.log")
        if not os.path.exists(os.path.join(a.run, f"midm_{st}.pt")):
            raise SystemExit(f"[pipeline] stage {st} did not finish: see {a.run}/{st}.log")
        print(f"[pipeline] {st} done", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a new run folder")
    ap.add_argument("--data", default="train/data")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget of the whole pipeline")
    ap.add_argument("--unet-channels", type=int, default=64)
    ap.add_argument("--n-embed", type=int, default=2048, help="codebook size (the shipped 128x128 model's: 2048)")
    ap.add_argument("--unet-stage-lr", type=float, default=3e-4, help="the unet stage's --lr")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per stage process")
    ap.add_argument("--shares", type=float, nargs=3, default=[0.32, 0.58, 0.92],
                    help="fractions of the time left that the ae phase (with --init-from only under --ae-anchor), "
                         "the parallel phase and e2e take")
    ap.add_argument("--init-from", default=None,
                    help="an exported model (folder with model.safetensors and config.yaml) to continue")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32",
                    help="the final export's weights (train.export --dtype)")
    ap.add_argument("--amp", choices=["f32", "bf16"], default="f32",
                    help="bf16 autocast for the unet, warmup and e2e stages (train.train --amp)")
    ap.add_argument("--ae-colour", action="store_true",
                    help="a new run's autoencoder stage with the colour terms (AE_COLOUR_FLAGS)")
    ap.add_argument("--ae-anchor", type=float, default=0.0,
                    help="with --init-from: first fine-tune the exported autoencoder for colour, its latents "
                         "held near the export's with this weight (train.train ae --anchor)")
    ap.add_argument("--corr-ema", type=float, default=0.0,
                    help="warmup/e2e: validate and finish with an average of the matching networks' weights "
                         "(train.train --corr-ema; 0 = off)")
    ap.add_argument("--vgg", default=None,
                    help="v2: L_perc and L_style on these VGG16 features (python -m train.vgg) instead of the autoencoder's")
    ap.add_argument("--recipe", choices=["v1", "v2"], default="v1",
                    help="v2: config.RECIPE_V2 for a new run, train.pairs for warmup and e2e (with --init-from, "
                         "the export's config decides)")
    a = ap.parse_args()
    if a.ae_anchor > 0 and not a.init_from:
        raise SystemExit("--ae-anchor fine-tunes an exported autoencoder: give --init-from (or --ae-colour for a new run)")
    if os.path.exists(os.path.join(a.run, "config.json")):
        raise SystemExit(f"{a.run} already holds a run: the pipeline starts new runs only")
    end = time.time() + a.minutes * 60
    fresh_corr = False
    if a.init_from:
        # size, codebook and width are the export's; a v1 or v1.1 export with --recipe v2 keeps its
        # autoencoder, UNet and decoder and gets new correspondence networks
        import yaml

        was_v2 = recipe_of(yaml.safe_load(open(os.path.join(a.init_from, "config.yaml")))) == "v2"
        cfg = seed_run(a.run, a.init_from, a.recipe)
        fresh_corr = a.recipe == "v2" and not was_v2
        # the stages' pairs and flags: train.pairs for max-pooled conditions (v1.1 and v2)
        a.recipe = "v2" if cfg["midms"].get("label_downsample") == "max" else "v1"
    else:
        run_config(a.run, a.unet_channels, a.size, a.n_embed, a.recipe)
    export_s = 60  # the export and its background latent (train.background, ~30 s on 2 cores)
    left = lambda: end - time.time() - export_s
    if a.init_from:
        if a.ae_anchor > 0:
            run_parallel(a, ["ae"], left() * a.shares[0])
        run_parallel(a, ["unet", "decoder"] + (["warmup"] if fresh_corr else []), left() * a.shares[1])
    else:
        run_parallel(a, ["ae"], left() * a.shares[0])
        run_parallel(a, ["unet", "warmup", "decoder"], left() * a.shares[1])
    run_parallel(a, ["e2e"], left() * a.shares[2])
    out = export_run(a.run, a.data, a.dtype)
    print(f"[pipeline] exported to {out}; {(a.minutes * 60 - (end - time.time())) / 60:.1f} min", flush=True)


def export_run(run, data, dtype="f32"):
    """`train.export` of the run into `<run>/export` (weights in `dtype`), and for a model that
    matches by region the background latent of that export's encoder (`train.background`): the
    run's config carries the latent of the export it was seeded from, stale once the autoencoder has
    trained (`--ae-anchor`). Returns the export folder. `scripts/gpu-train.sh` calls it itself only
    when the pipeline stopped early: a bare `train.export` there once wrote the seed's latent back
    (found by the CPU dry run of 2026-12-02: 0.9123 / -0.633 / -1.06 exported, 0.8993 / -0.6307 /
    -1.0578 computed)."""
    out = os.path.join(run, "export")
    subprocess.run([sys.executable, "-m", "train.export", "--run", run, "--out", out, "--dtype", dtype], check=True)
    with open(os.path.join(out, "config.yaml")) as f:
        region_matching = yaml.safe_load(f)["midms"].get("region_matching", False)
    if region_matching:
        subprocess.run([sys.executable, "-m", "train.background", "--weights", out, "--data", data,
                        "--threads", str(os.cpu_count() or 1), "--write"], check=True)
    return out


if __name__ == "__main__":
    main()
